// Text <-> token ids, built from a GGUF file's tokenizer.* metadata.
//
// Supported: tokenizer.ggml.model = "gpt2" (byte-level BPE) with the pre-tokenizers named by
// tokenizer.ggml.pre that SmolLM2 ("smollm"), Llama 3 ("llama-bpe") and Qwen2 ("qwen2") use, plus
// "default"/"gpt2"; and "llama" (SentencePiece-style: score-driven merges, <0xNN> byte fallback,
// add_space_prefix — Llama 2, Gemma). Results are identical to llama.cpp's tokenizer for the same file.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tappa {

class GgufFile;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class Tokenizer {
 public:
  // Throws tappa::Error naming the missing or malformed key, or the unsupported model/pre type.
  static Tokenizer from_gguf(const GgufFile& file);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special: prepend BOS (and append EOS) as the file's add_bos_token/add_eos_token say.
  // parse_special: text spans equal to control / user-defined tokens become those tokens
  // (llama.cpp's parse_special); otherwise they are tokenized as plain text.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = false) const;

  // The bytes of one token (byte-level BPE decoded back to raw bytes). Control tokens give "" unless
  // render_special is set. May be a partial UTF-8 sequence.
  std::string token_to_piece(int32_t id, bool render_special = false) const;
  std::string decode(const std::vector<int32_t>& ids, bool render_special = false) const;

  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when the file has none
  int32_t eos() const;
  bool is_eog(int32_t id) const;  // end of generation: eos, eot, <|im_end|>-style tokens
  bool add_bos() const;
  const std::string& model_type() const;  // tokenizer.ggml.model
  const std::string& pre_type() const;    // tokenizer.ggml.pre
  const std::string& chat_template() const;  // "" when absent
  const std::string& token_text(int32_t id) const;  // the vocabulary entry as stored

  // Renders messages with the file's chat template. Recognises ChatML (<|im_start|>role\n...<|im_end|>,
  // as SmolLM2 and Qwen2 use, including SmolLM2's default system message), the Llama 3 header format
  // and Gemma's turns (<start_of_turn>role\n...<end_of_turn>; also taken when the file has no template
  // but these tokens); throws tappa::Error for other templates.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tappa
