// Byte-level BPE (tokenizer.ggml.model = "gpt2") and SentencePiece-style (= "llama": Llama 2, Gemma)
// tokenizers, producing the same ids as llama.cpp.
//
// encode():  split off special-token spans (longest tokens first), then per remaining text fragment:
//   gpt2:    pre-tokenize into words -> map each word's bytes to GPT-2's printable code points -> BPE
//            (lowest merge rank first, leftmost on ties) -> vocabulary ids.
//   llama:   optional leading space -> spaces become U+2581 -> one symbol per UTF-8 character -> merge
//            the adjacent pair whose concatenation is the highest-scoring token (leftmost on ties)
//            until none is a token -> symbols that are not tokens fall back to <0xNN> byte tokens.
// decode():  concatenate token_to_piece(), which maps a normal token's text back to bytes.
#include "tappa/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace tappa {
namespace {

// Token attributes, as llama.cpp derives them from tokenizer.ggml.token_type.
enum Attr : uint32_t {
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
};

uint32_t attr_from_type(int64_t type) {
  switch (type) {
    case 1: return kAttrNormal;
    case 2: return kAttrUnknown;
    case 3: return kAttrControl;
    case 4: return kAttrUserDefined;
    case 5: return kAttrUnused;
    case 6: return kAttrByte;
    default: return 0;  // 0 = undefined, and anything unknown
  }
}

constexpr const char* kKeyModel = "tokenizer.ggml.model";
constexpr const char* kKeyPre = "tokenizer.ggml.pre";
constexpr const char* kKeyTokens = "tokenizer.ggml.tokens";
constexpr const char* kKeyTokenType = "tokenizer.ggml.token_type";
constexpr const char* kKeyMerges = "tokenizer.ggml.merges";
constexpr const char* kKeyScores = "tokenizer.ggml.scores";
constexpr const char* kKeyAddSpacePrefix = "tokenizer.ggml.add_space_prefix";
constexpr std::string_view kSpmSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space
constexpr const char* kKeyAddBos = "tokenizer.ggml.add_bos_token";
constexpr const char* kKeyAddEos = "tokenizer.ggml.add_eos_token";
constexpr const char* kKeyChatTemplate = "tokenizer.chat_template";

// Token texts that llama.cpp treats as end-of-generation (and forces to be control tokens).
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "[e~[",
};
// Texts that llama.cpp takes for the end-of-turn token when the file names none.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",
    "<end_of_utterance>",
};
// Fill-in-the-middle tokens found by text; the pad / repo / file-separator ones end generation.
constexpr std::string_view kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::string_view kFimRepTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepTexts[] = {"<|file_sep|>"};

template <size_t N>
bool in_list(const std::string& s, const std::string_view (&list)[N]) {
  for (std::string_view t : list)
    if (s == t) return true;
  return false;
}

enum class ChatFormat { None, ChatML, Llama3, Gemma };

std::string trim_spaces(const std::string& s) {
  auto sp = [](unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  size_t b = 0, e = s.size();
  while (b < e && sp(s[b])) ++b;
  while (e > b && sp(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Finds the default system message of a ChatML template: a literal
// '<|im_start|>system\n...<|im_end|>' block whose text is fixed (SmolLM2 and Qwen2 emit one when the
// conversation does not start with a system message). The newline may be real or a Jinja "\n" escape.
std::optional<std::string> chatml_default_system(const std::string& tmpl) {
  static const std::string kHead = "<|im_start|>system";
  static const std::string kEnd = "<|im_end|>";
  for (size_t at = tmpl.find(kHead); at != std::string::npos; at = tmpl.find(kHead, at + 1)) {
    size_t p = at + kHead.size();
    if (tmpl.compare(p, 1, "\n") == 0) {
      p += 1;
    } else if (tmpl.compare(p, 2, "\\n") == 0) {
      p += 2;
    } else {
      continue;
    }
    const size_t end = tmpl.find(kEnd, p);
    if (end == std::string::npos) continue;
    const std::string raw = tmpl.substr(p, end - p);
    if (raw.empty() || raw.find_first_of("'\"{}+") != std::string::npos) continue;  // not a fixed text
    std::string text;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size()) {
        const char n = raw[++i];
        text += n == 'n' ? '\n' : n == 't' ? '\t' : n;
      } else {
        text += raw[i];
      }
    }
    return text;
  }
  return std::nullopt;
}

struct Fragment {
  int32_t token;  // -1: raw text [offset, offset + length)
  size_t offset;
  size_t length;
};

struct MergeInfo {
  int32_t rank;
  int32_t result;  // symbol id of the merged text
};

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::string model;
  std::string pre;
  std::string chat_template;
  tok::PreType pre_type = tok::PreType::Default;
  bool spm = false;               // tokenizer.ggml.model == "llama"
  bool add_space_prefix = false;  // spm: a space is prepended to text that follows BOS/special tokens
  std::vector<float> scores;      // spm: per token, higher merges first
  std::array<int32_t, 256> byte_token{};  // spm: id of <0xNN> (or of the byte itself), -1 if absent
  bool ignore_merges = false;
  bool add_bos = false;
  bool add_eos = false;

  int32_t bos = -1, eos = -1, eot = -1, eom = -1;
  int32_t fim_pad = -1, fim_rep = -1, fim_sep = -1;

  std::vector<std::string> text;  // per token
  std::vector<uint32_t> attr;     // per token
  std::vector<std::string> piece; // per token, as rendered with render_special
  std::unordered_map<std::string, int32_t> token_to_id;
  std::vector<int32_t> special_tokens;  // control / user-defined / unknown, longest text first
  std::set<int32_t> eog;

  // BPE over interned strings ("symbols"): every vocabulary text and every merge side and result.
  std::unordered_map<std::string, int32_t> symbol_of;
  std::vector<int32_t> symbol_token;            // symbol id -> token id or -1
  std::array<int32_t, 256> byte_symbol{};       // symbol of each byte's printable form, or -1
  std::unordered_map<uint64_t, MergeInfo> merges;  // (left symbol << 32 | right symbol) -> merge

  ChatFormat chat_format = ChatFormat::None;
  std::optional<std::string> default_system;

  // Words seen before -> ids. Shared by all encode() calls; guarded because encode() is const.
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
  static constexpr size_t kCacheMaxEntries = 1u << 17;
  static constexpr size_t kCacheMaxWordBytes = 128;

  int32_t n_vocab() const { return static_cast<int32_t>(text.size()); }

  int32_t intern(const std::string& s) {
    auto [it, inserted] = symbol_of.try_emplace(s, static_cast<int32_t>(symbol_token.size()));
    if (inserted) symbol_token.push_back(-1);
    return it->second;
  }

  int32_t find_token(std::string_view s) const {
    auto it = token_to_id.find(std::string(s));
    return it == token_to_id.end() ? -1 : it->second;
  }

  // --- loading -------------------------------------------------------------------------------------

  void load(const GgufFile& file);
  void load_vocab(const GgufFile& file);
  void load_spm(const GgufFile& file);
  void finish_load(const GgufFile& file);
  void load_special_ids(const GgufFile& file);
  void build_pieces();

  // --- encoding ------------------------------------------------------------------------------------

  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  void encode_fragment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(const std::string& word, std::vector<int32_t>& out) const;
  void bpe(const std::string& word, std::vector<int32_t>& out) const;
  void spm_encode(std::string_view text, std::vector<int32_t>& out) const;

  std::string decode_normal_text(const std::string& token_text) const;
};

// ----------------------------------------------------------------------------------------------------
// Loading

void Tokenizer::Impl::load(const GgufFile& file) {
  path = file.path();
  auto fail = [&](const std::string& msg) -> Error { return Error(path + ": " + msg); };

  model = file.get(kKeyModel).as_string(kKeyModel);
  if (model != "gpt2" && model != "llama")
    throw fail("unsupported tokenizer model '" + model + "' (" + kKeyModel +
               "); supported: \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece)");
  spm = model == "llama";

  if (const GgufValue* v = file.find(kKeyPre)) pre = v->as_string(kKeyPre);
  if (spm) {
    load_spm(file);
    return;
  }
  // Pre-tokenizer names that llama.cpp maps to the patterns implemented here, with its flags.
  if (pre.empty() || pre == "default") {
    pre_type = tok::PreType::Default;
  } else if (pre == "gpt-2" || pre == "gpt2") {
    pre_type = tok::PreType::Gpt2;
  } else if (pre == "smollm") {
    pre_type = tok::PreType::Smollm;
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    pre_type = tok::PreType::Llama3;
    ignore_merges = true;
    add_bos = true;
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    pre_type = tok::PreType::Qwen2;
  } else {
    throw fail("unsupported pre-tokenizer '" + pre + "' (" + kKeyPre +
               "); supported: smollm, llama-bpe, qwen2, default, gpt-2");
  }

  load_vocab(file);

  // Merges: "left right", rank = index; the first of two equal merges keeps its rank.
  const GgufValue* mv = file.find(kKeyMerges);
  if (!mv) throw fail(std::string("missing metadata key '") + kKeyMerges + "' (needed by a BPE tokenizer)");
  const GgufArray& merge_list = mv->as_array(kKeyMerges);
  if (!merge_list.values.empty() && merge_list.element_type != GgufType::STRING)
    throw fail(std::string(kKeyMerges) + " must be an array of strings");

  const size_t n = text.size();
  symbol_of.reserve(n + merge_list.values.size() * 2);
  symbol_token.reserve(n + merge_list.values.size());
  for (size_t i = 0; i < n; ++i) intern(text[i]);
  for (const auto& [s, id] : token_to_id) symbol_token[symbol_of.at(s)] = id;
  merges.reserve(merge_list.values.size() * 2);
  for (size_t i = 0; i < merge_list.values.size(); ++i) {
    const std::string& m = merge_list.values[i].as_string(kKeyMerges);
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos) continue;  // llama.cpp files this under ("", ""), which never matches
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    if (left.empty() || right.empty()) continue;
    const int32_t l = intern(left), r = intern(right);
    const int32_t result = intern(left + right);
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
    merges.try_emplace(key, MergeInfo{static_cast<int32_t>(i), result});
  }
  for (int b = 0; b < 256; ++b) {
    auto it = symbol_of.find(tok::byte_to_utf8()[b]);
    byte_symbol[b] = it == symbol_of.end() ? -1 : it->second;
  }
  finish_load(file);
}

// SentencePiece vocabularies: scores instead of merges; llama.cpp's defaults for "llama" files (BOS
// added, space prefix on), which the file's keys override.
void Tokenizer::Impl::load_spm(const GgufFile& file) {
  load_vocab(file);
  const size_t n = text.size();
  scores.assign(n, 0.0f);
  if (const GgufValue* v = file.find(kKeyScores)) {
    const GgufArray& arr = v->as_array(kKeyScores);
    if (arr.values.size() < n)
      throw Error(path + ": " + kKeyScores + " has " + std::to_string(arr.values.size()) + " entries for " +
                  std::to_string(n) + " tokens");
    for (size_t i = 0; i < n; ++i) scores[i] = static_cast<float>(arr.values[i].as_f64(kKeyScores));
  }
  // Byte fallback: "<0xNN>", else the byte itself as a token (llama.cpp's byte_to_token).
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
    int32_t id = find_token(name);
    if (id < 0) id = find_token(std::string_view(reinterpret_cast<const char*>(&b), 1));
    byte_token[b] = id;
  }
  add_bos = true;
  add_space_prefix = true;
  if (const GgufValue* v = file.find(kKeyAddSpacePrefix)) add_space_prefix = v->as_bool(kKeyAddSpacePrefix);
  finish_load(file);
}

void Tokenizer::Impl::load_vocab(const GgufFile& file) {
  auto fail = [&](const std::string& msg) -> Error { return Error(path + ": " + msg); };
  const GgufArray& tokens = file.get(kKeyTokens).as_array(kKeyTokens);
  if (tokens.element_type != GgufType::STRING)
    throw fail(std::string(kKeyTokens) + " must be an array of strings, not of " +
               std::string(gguf_type_name(tokens.element_type)));
  if (tokens.values.empty()) throw fail(std::string(kKeyTokens) + " is empty");
  if (tokens.values.size() > static_cast<size_t>(INT32_MAX)) throw fail(std::string(kKeyTokens) + " is too large");
  const size_t n = tokens.values.size();
  text.resize(n);
  attr.assign(n, kAttrNormal);
  token_to_id.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    std::string word = tokens.values[i].as_string(kKeyTokens);
    if (word.empty()) word = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp names them
    token_to_id[word] = static_cast<int32_t>(i);                   // a later duplicate wins
    text[i] = std::move(word);
  }
  if (const GgufValue* v = file.find(kKeyTokenType)) {
    const GgufArray& types = v->as_array(kKeyTokenType);
    if (types.values.size() < n)
      throw fail(std::string(kKeyTokenType) + " has " + std::to_string(types.values.size()) +
                 " entries for " + std::to_string(n) + " tokens");
    for (size_t i = 0; i < n; ++i) attr[i] = attr_from_type(types.values[i].as_i64(kKeyTokenType));
  }
}

void Tokenizer::Impl::finish_load(const GgufFile& file) {
  load_special_ids(file);

  if (const GgufValue* v = file.find(kKeyAddBos)) add_bos = v->as_bool(kKeyAddBos);
  if (const GgufValue* v = file.find(kKeyAddEos)) add_eos = v->as_bool(kKeyAddEos);

  // Special tokens, longest first (the order in which their spans are split off the text).
  for (int32_t id = 0; id < n_vocab(); ++id)
    if (attr[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special_tokens.push_back(id);
  std::stable_sort(special_tokens.begin(), special_tokens.end(),
                   [&](int32_t a, int32_t b) { return text[a].size() > text[b].size(); });

  build_pieces();

  if (const GgufValue* v = file.find(kKeyChatTemplate)) chat_template = v->as_string(kKeyChatTemplate);
  if (chat_template.find("<|im_start|>") != std::string::npos) {
    chat_format = ChatFormat::ChatML;
    default_system = chatml_default_system(chat_template);
  } else if (chat_template.find("<|start_header_id|>") != std::string::npos &&
             chat_template.find("<|end_header_id|>") != std::string::npos) {
    chat_format = ChatFormat::Llama3;
  } else if (chat_template.find("<start_of_turn>") != std::string::npos ||
             (chat_template.empty() && find_token("<start_of_turn>") >= 0 && find_token("<end_of_turn>") >= 0)) {
    // Gemma's turn format; also taken when the file has no template but the turn tokens (the Gemma 3
    // 270M GGUF ships without tokenizer.chat_template).
    chat_format = ChatFormat::Gemma;
  }
}

void Tokenizer::Impl::load_special_ids(const GgufFile& file) {
  const int32_t nv = n_vocab();
  // llama.cpp's defaults ("gpt2": 11 and 11, "llama": 1 and 2); a default outside the vocabulary means none.
  bos = spm ? (1 < nv ? 1 : -1) : (11 < nv ? 11 : -1);
  eos = spm ? (2 < nv ? 2 : -1) : (11 < nv ? 11 : -1);
  int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1;
  const std::pair<const char*, int32_t*> keys[] = {
      {"tokenizer.ggml.bos_token_id", &bos},         {"tokenizer.ggml.eos_token_id", &eos},
      {"tokenizer.ggml.eot_token_id", &eot},         {"tokenizer.ggml.eom_token_id", &eom},
      {"tokenizer.ggml.fim_pre_token_id", &fim_pre}, {"tokenizer.ggml.fim_suf_token_id", &fim_suf},
      {"tokenizer.ggml.fim_mid_token_id", &fim_mid}, {"tokenizer.ggml.fim_pad_token_id", &fim_pad},
      {"tokenizer.ggml.fim_rep_token_id", &fim_rep}, {"tokenizer.ggml.fim_sep_token_id", &fim_sep},
      {"tokenizer.ggml.prefix_token_id", &fim_pre},  {"tokenizer.ggml.suffix_token_id", &fim_suf},
      {"tokenizer.ggml.middle_token_id", &fim_mid},
  };
  for (const auto& [key, dst] : keys) {
    const GgufValue* v = file.find(key);
    if (!v) continue;
    const uint64_t id = v->as_u64(key);
    if (id < static_cast<uint64_t>(nv)) *dst = static_cast<int32_t>(id);  // out of range: keep the default
  }

  // Find tokens by their text, as llama.cpp does for files that do not name them, and make sure they
  // are control tokens.
  auto detect = [&](int32_t& slot, auto& texts) {
    if (slot >= 0) return;
    for (int32_t id = 0; id < nv; ++id) {
      if (in_list(text[id], texts)) {
        slot = id;
        attr[id] |= kAttrControl;
        return;
      }
    }
  };
  static constexpr std::string_view kEomTexts[] = {"<|eom_id|>"};
  static constexpr std::string_view kFimPreTexts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>",
                                                      "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>"};
  static constexpr std::string_view kFimSufTexts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>",
                                                      "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>"};
  static constexpr std::string_view kFimMidTexts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
                                                      "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>"};
  detect(eot, kEotTexts);
  detect(eom, kEomTexts);
  detect(fim_pre, kFimPreTexts);
  detect(fim_suf, kFimSufTexts);
  detect(fim_mid, kFimMidTexts);
  detect(fim_pad, kFimPadTexts);
  detect(fim_rep, kFimRepTexts);
  detect(fim_sep, kFimSepTexts);

  for (int32_t id : {fim_pad, fim_rep, fim_sep})
    if (id >= 0) eog.insert(id);
  for (int32_t id = 0; id < nv; ++id) {
    if (in_list(text[id], kEogTexts)) {
      eog.insert(id);
      attr[id] |= kAttrControl;
    }
  }
  // gpt-oss: these are always rendered.
  for (int32_t id = 0; id < nv; ++id) {
    const std::string& t = text[id];
    if (t == "<|channel|>" || t == "<|message|>" || t == "<|start|>" || t == "<|constrain|>") attr[id] = kAttrUserDefined;
  }
  for (int32_t id : {eos, eot, eom})
    if (id >= 0) eog.insert(id);

  // With both <|return|> and <|call|> (gpt-oss), or <|calls|> and <|flush|> (solar-open), <|end|> is an
  // ordinary user-defined token; with <|tool_response>/<|plamo:eos|>, </s> is a normal token.
  bool has_return = false, has_call = false, has_flush = false, has_normal_s_marker = false;
  int32_t end_id = -1, s_id = -1;
  for (int32_t id : eog) {
    const std::string& t = text[id];
    if (t == "<|return|>") has_return = true;
    else if (t == "<|call|>" || t == "<|calls|>") has_call = true;
    else if (t == "<|flush|>") has_flush = true;
    else if (t == "<|end|>") end_id = id;
    if (t == "<|tool_response>" || t == "<|plamo:eos|>") has_normal_s_marker = true;
    else if (t == "</s>") s_id = id;
  }
  if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush))) {
    eog.erase(end_id);
    attr[end_id] = kAttrUserDefined;
  }
  if (has_normal_s_marker && s_id >= 0) {
    eog.erase(s_id);
    attr[s_id] = kAttrNormal;
  }
}

std::string Tokenizer::Impl::decode_normal_text(const std::string& token_text) const {
  std::vector<uint32_t> cps;
  tok::decode_utf8_lenient(token_text, cps);
  std::string out;
  out.reserve(token_text.size());
  for (uint32_t cp : cps) {
    const int b = tok::cp_to_byte(cp);
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      // llama.cpp's marker for a code point that is not one of the 256 byte symbols.
      std::string utf8;
      tok::append_utf8(utf8, cp);
      static const char* hex = "0123456789abcdef";
      out += "[UNK_BYTE_0x";
      for (unsigned char c : utf8) {
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 15]);
      }
      out += token_text + "]";
    }
  }
  return out;
}

void Tokenizer::Impl::build_pieces() {
  piece.resize(text.size());
  for (size_t id = 0; id < text.size(); ++id) {
    const uint32_t a = attr[id];
    if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined)) {
      piece[id] = text[id];
    } else if (a & kAttrNormal) {
      if (spm) {
        // SentencePiece: the visible space U+2581 stands for ' '.
        std::string& p = piece[id];
        const std::string& t = text[id];
        for (size_t i = 0; i < t.size();) {
          if (t.compare(i, kSpmSpace.size(), kSpmSpace) == 0) {
            p.push_back(' ');
            i += kSpmSpace.size();
          } else {
            p.push_back(t[i++]);
          }
        }
      } else {
        piece[id] = decode_normal_text(text[id]);
      }
    } else if (a & kAttrByte) {
      // "<0xAB>"
      const std::string hex = text[id].size() > 3 ? text[id].substr(3, 2) : std::string();
      piece[id] = std::string(1, static_cast<char>(std::strtol(hex.c_str(), nullptr, 16)));
    }  // undefined / unused tokens render as nothing
  }
}

// ----------------------------------------------------------------------------------------------------
// Encoding

std::vector<Fragment> Tokenizer::Impl::partition(std::string_view input, bool parse_special) const {
  std::vector<Fragment> frags;
  if (input.empty()) return frags;
  frags.push_back({-1, 0, input.size()});
  std::vector<Fragment> next;
  for (int32_t id : special_tokens) {
    // Without parse_special, control (and unknown) tokens are plain text; user-defined ones are still
    // split off.
    if (!parse_special && (attr[id] & (kAttrControl | kAttrUnknown))) continue;
    const std::string& t = text[id];
    bool any = false;
    for (const Fragment& f : frags) {
      tok::work_units += 1 + (f.token < 0 ? f.length : 0);
      if (f.token < 0 && f.length >= t.size() && input.substr(f.offset, f.length).find(t) != std::string_view::npos) {
        any = true;
        break;
      }
    }
    if (!any) continue;
    next.clear();
    for (const Fragment& f : frags) {
      tok::work_units += 1 + (f.token < 0 ? f.length : 0);
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view s = input.substr(f.offset, f.length);
      size_t pos = 0;
      for (size_t hit = s.find(t); hit != std::string_view::npos; hit = s.find(t, pos)) {
        if (hit > pos) next.push_back({-1, f.offset + pos, hit - pos});
        next.push_back({id, 0, 0});
        pos = hit + t.size();
      }
      if (pos < s.size()) next.push_back({-1, f.offset + pos, s.size() - pos});
    }
    frags.swap(next);
  }
  return frags;
}

// One fragment of text (no special tokens in it) as llama.cpp's SentencePiece session does it.
void Tokenizer::Impl::spm_encode(std::string_view input, std::vector<int32_t>& out) const {
  std::string text;
  text.reserve(input.size() * 2);
  for (char ch : input) {
    if (ch == ' ') text += kSpmSpace;
    else text.push_back(ch);
  }
  const size_t n_bytes = text.size();
  if (n_bytes == 0) return;

  // One symbol per UTF-8 character, its length taken from the lead byte only (as llama.cpp does, so
  // invalid sequences split the same way); the last one is cut at the end of the text.
  struct Sym {
    uint32_t offset, len;  // len 0 once merged into its left neighbour
    int32_t prev, next;
  };
  std::vector<Sym> syms;
  syms.reserve(n_bytes);
  for (size_t off = 0; off < n_bytes;) {
    static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    const size_t len = std::min<size_t>(kLen[static_cast<uint8_t>(text[off]) >> 4], n_bytes - off);
    const int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back({static_cast<uint32_t>(off), static_cast<uint32_t>(len), idx - 1,
                    off + len == n_bytes ? -1 : idx + 1});
    off += len;
  }

  // Candidate pairs: highest score first, then leftmost. `size` identifies the pair's text at queue
  // time; a pair whose symbols have since changed length is stale.
  struct Pair {
    float score;
    int32_t left, right;
    uint32_t size;
  };
  auto lower = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::vector<Pair> heap;
  heap.reserve(syms.size());
  // Which two symbols produced a merged text (llama.cpp's rev_merge), for symbols that end up not
  // being tokens. Merged symbols always are, so this is consulted only in corner cases.
  std::unordered_map<std::string, std::pair<int32_t, int32_t>> rev_merge;
  auto try_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::string_view pair_text(text.data() + syms[left].offset, syms[left].len + syms[right].len);
    const int32_t id = find_token(pair_text);
    ++tok::work_units;
    if (id < 0) return;
    heap.push_back({scores[id], left, right, static_cast<uint32_t>(pair_text.size())});
    std::push_heap(heap.begin(), heap.end(), lower);
    rev_merge[std::string(pair_text)] = {left, right};
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_pair(i - 1, i);
  tok::work_units += n_bytes;
  while (!heap.empty()) {
    ++tok::work_units;
    std::pop_heap(heap.begin(), heap.end(), lower);
    const Pair p = heap.back();
    heap.pop_back();
    Sym& l = syms[p.left];
    Sym& r = syms[p.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != p.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = p.left;
    try_pair(l.prev, p.left);
    try_pair(p.left, l.next);
  }

  // A symbol that is a token is emitted; otherwise split where it was merged, down to bytes.
  auto emit = [&](auto& self, const Sym& s) -> void {
    const std::string_view t(text.data() + s.offset, s.len);
    const int32_t id = find_token(t);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    auto it = rev_merge.find(std::string(t));
    if (it == rev_merge.end()) {
      for (char ch : t) {
        const int32_t b = byte_token[static_cast<uint8_t>(ch)];
        if (b < 0)
          throw Error(path + ": the vocabulary has no byte token for 0x" + std::to_string(static_cast<uint8_t>(ch)) +
                      " (needed for byte fallback)");
        out.push_back(b);
      }
      return;
    }
    self(self, syms[it->second.first]);
    self(self, syms[it->second.second]);
  };
  for (int32_t i = 0; i >= 0; i = syms[i].next) emit(emit, syms[i]);
}

void Tokenizer::Impl::encode_fragment(std::string_view fragment, std::vector<int32_t>& out) const {
  std::vector<uint32_t> cps;
  tok::work_units += fragment.size();
  tok::decode_utf8_lenient(fragment, cps);
  const std::vector<size_t> lengths = tok::pre_split(pre_type, cps);
  std::string word;
  size_t start = 0;
  for (size_t len : lengths) {
    word.clear();
    for (size_t i = start; i < start + len; ++i) tok::append_utf8(word, cps[i]);
    start += len;
    encode_word(word, out);
  }
}

void Tokenizer::Impl::encode_word(const std::string& word, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  tok::work_units += word.size();
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(word);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  bpe(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheMaxEntries) cache.clear();
    cache.emplace(word, std::move(ids));
  }
}

void Tokenizer::Impl::bpe(const std::string& word, std::vector<int32_t>& out) const {
  const auto& byte_utf8 = tok::byte_to_utf8();
  const size_t n = word.size();
  if (n == 0) return;

  auto mapped = [&](size_t b, size_t e) {
    std::string s;
    for (size_t i = b; i < e; ++i) s += byte_utf8[static_cast<unsigned char>(word[i])];
    return s;
  };
  if (ignore_merges) {
    // Llama 3: a word that is itself a token is taken whole.
    const int32_t id = find_token(mapped(0, n));
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }

  // One symbol per byte (= one printable code point); merged symbols absorb their right neighbour.
  struct Sym {
    int32_t id;    // symbol id, -1 when the text is unknown
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    uint32_t len;  // bytes of `word` covered; 0 once merged away
  };
  std::vector<Sym> syms(n);
  for (size_t i = 0; i < n; ++i) {
    syms[i] = {byte_symbol[static_cast<unsigned char>(word[i])], static_cast<int32_t>(i) - 1,
               i + 1 < n ? static_cast<int32_t>(i + 1) : -1, 1};
  }

  // Candidate merges, lowest (rank, left position) first. The right symbol is always left.next at the
  // time the pair is queued, so (left, both symbol ids) identify it.
  struct Cand {
    uint64_t order;  // rank << 32 | left index
    int32_t left_id, right_id, result;
  };
  auto later = [](const Cand& a, const Cand& b) { return a.order > b.order; };
  std::vector<Cand> heap;
  heap.reserve(2 * n);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t l = syms[left].id, r = syms[right].id;
    ++tok::work_units;
    if (l < 0 || r < 0) return;
    auto it = merges.find((static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r));
    if (it == merges.end()) return;
    heap.push_back({(static_cast<uint64_t>(it->second.rank) << 32) | static_cast<uint32_t>(left), l, r, it->second.result});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (size_t i = 1; i < n; ++i) consider(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));

  tok::work_units += n;
  while (!heap.empty()) {
    ++tok::work_units;
    std::pop_heap(heap.begin(), heap.end(), later);
    const Cand c = heap.back();
    heap.pop_back();
    const int32_t li = static_cast<int32_t>(c.order & 0xFFFFFFFFu);
    Sym& left = syms[li];
    // Stale: one side has changed since this pair was queued.
    if (left.len == 0 || left.id != c.left_id || left.next < 0) continue;
    Sym& right = syms[left.next];
    if (right.id != c.right_id) continue;
    left.id = c.result;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = li;
    consider(left.prev, li);
    consider(li, left.next);
  }

  size_t offset = 0;
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const Sym& s = syms[i];
    const int32_t token = s.id >= 0 ? symbol_token[s.id] : -1;
    if (token >= 0) {
      out.push_back(token);
    } else {
      // Not in the vocabulary: llama.cpp looks up each byte of the printable form as a token of its
      // own and drops those that are not tokens either.
      for (char ch : mapped(offset, offset + s.len)) {
        const int32_t id = find_token(std::string_view(&ch, 1));
        if (id >= 0) out.push_back(id);
      }
    }
    offset += s.len;
  }
}

// ----------------------------------------------------------------------------------------------------
// Public interface

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_gguf(const GgufFile& file) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->load(file);
  } catch (const Error& e) {  // name the file, as every GGUF error does
    const std::string_view msg = e.what();
    if (msg.rfind(file.path() + ": ", 0) == 0) throw;
    throw Error(file.path() + ": " + std::string(msg));
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && m.add_bos && m.bos >= 0) out.push_back(m.bos);
  bool prev_special = true;  // spm: text at the start or after a special token gets the space prefix
  std::string prefixed;
  for (const Fragment& f : m.partition(text, parse_special)) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
    } else if (m.spm) {
      const std::string_view frag = text.substr(f.offset, f.length);
      if (m.add_space_prefix && prev_special) {
        prefixed.assign(1, ' ');
        prefixed.append(frag);
        m.spm_encode(prefixed, out);
      } else {
        m.spm_encode(frag, out);
      }
      prev_special = false;
    } else {
      m.encode_fragment(text.substr(f.offset, f.length), out);
    }
  }
  if (add_special && m.add_eos && m.eos >= 0) out.push_back(m.eos);
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  const Impl& m = *impl_;
  if (id < 0 || id >= m.n_vocab())
    throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(m.n_vocab()) + ")");
  if (!render_special && (m.attr[id] & (kAttrUnknown | kAttrControl))) return {};
  return m.piece[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids) out += token_to_piece(id, render_special);
  return out;
}

int32_t Tokenizer::n_vocab() const { return impl_->n_vocab(); }
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
bool Tokenizer::is_eog(int32_t id) const { return impl_->eog.count(id) != 0; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
const std::string& Tokenizer::model_type() const { return impl_->model; }
const std::string& Tokenizer::pre_type() const { return impl_->pre; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

const std::string& Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= impl_->n_vocab())
    throw Error("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                std::to_string(impl_->n_vocab()) + ")");
  return impl_->text[id];
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  const Impl& m = *impl_;
  std::string out;
  switch (m.chat_format) {
    case ChatFormat::ChatML:
      if (!messages.empty() && messages.front().role != "system" && m.default_system)
        out += "<|im_start|>system\n" + *m.default_system + "<|im_end|>\n";
      for (const ChatMessage& msg : messages) out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::Llama3:
      for (const ChatMessage& msg : messages)
        out += "<|start_header_id|>" + msg.role + "<|end_header_id|>\n\n" + trim_spaces(msg.content) + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::Gemma: {
      // Gemma has no system role: system text goes in front of the first user turn ("\n\n" after it);
      // the assistant's role is "model"; contents are trimmed (llama.cpp's rendering of the template).
      std::string system;
      for (const ChatMessage& msg : messages) {
        if (msg.role == "system") {
          system += trim_spaces(msg.content);
          continue;
        }
        const std::string role = msg.role == "assistant" ? "model" : msg.role;
        out += "<start_of_turn>" + role + "\n";
        if (!system.empty() && role != "model") {
          out += system + "\n\n";
          system.clear();
        }
        out += trim_spaces(msg.content) + "<end_of_turn>\n";
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      return out;
    }
    case ChatFormat::None:
      break;
  }
  if (m.chat_template.empty()) throw Error(m.path + ": the model has no chat template (" + kKeyChatTemplate + ")");
  throw Error(m.path + ": unsupported chat template (only ChatML, Llama 3 and Gemma formats are recognised)");
}

}  // namespace tappa
