// Text generation: sampling, stop conditions, a per-sequence KV method, token streaming and log
// probabilities — the one generation loop every client uses (the CLI's run / compress / bench, the
// eval-kv harness, the server, the Python module).
//
// One request, start to end:
//   tappa::GenerateOptions o;
//   o.max_tokens = 64;
//   o.kv = {"tappa", 256};
//   auto r = tappa::generate(engine, tokens, o, [](std::string_view piece) { std::cout << piece; return true; });
//
// Many requests in one engine (continuous batching): a Generator per request, stepped together —
//   std::vector<tappa::Generator*> running = …;
//   while (…) { for (auto& [g, text] : tappa::step_all(engine, running)) …; drop the done ones; add new ones; }
// step_all runs one Engine::decode for all of them (every weight read once per step), prompts of new
// requests riding in the same pass as the decodes of running ones.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tappa/control.h"
#include "tappa/engine.h"
#include "tappa/kv.h"

namespace tappa {

struct GenerateOptions {
  int max_tokens = 128;                // tokens to generate (0: only the prompt, e.g. for its log probabilities)
  SamplingParams sampling;             // greedy unless temperature > 0
  std::vector<std::string> stop;       // stop strings: the text ends before the first one (not included)
  bool ignore_eos = false;             // go on past end-of-generation tokens
  bool stop_at_newline = false;        // end at the first newline after some non-blank text (LongBench samsum)
  KvOptions kv;                        // the sequence's KV method ("fullkv": every token stays)
  // Attach the KV method's compressor even where it evicts nothing (fullkv), for its record (per-layer
  // and per-head q-sim, bytes held: `tappa compress --kv fullkv`); the prompt then goes in one pass.
  bool kv_record_always = false;
  // Log probabilities: -1 none; k >= 0: of each generated token plus its k most likely alternatives.
  int logprobs = -1;
  bool prompt_logprobs = false;        // also of every prompt token after the first (echo, scoring)
  // Prompt tokens per forward pass when no KV method runs (0: the engine's n_batch). With a KV method
  // the prompt goes in one pass: compression works on the whole prompt, layer by layer.
  int prefill_chunk = 0;
};

enum class FinishReason { running, stop, length, cancelled };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled" (OpenAI's names)

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // the most likely tokens at that position, best first
};

struct GenerateResult {
  std::string text;                    // the generated text (stop string excluded)
  std::vector<int32_t> tokens;         // the generated tokens
  int n_prompt = 0;
  FinishReason finish = FinishReason::running;
  std::string stop_matched;            // the stop string that ended it, if one did
  std::vector<TokenLogprob> prompt_logprobs;  // prompt tokens 1 … n-1 (with prompt_logprobs)
  std::vector<TokenLogprob> logprobs;         // generated tokens (with logprobs >= 0)
  // The end-of-generation token that ended the text (finish = stop without a stop string), -1 if none;
  // it is in neither `tokens` nor `logprobs`, but a scorer needs its probability (an OpenAI-style echo
  // with max_tokens 1 scores every prompt token and drops the last entry, taken to be the generated one).
  int32_t eog_token = -1;
  std::optional<TokenLogprob> eog_logprob;    // with logprobs >= 0
  double prompt_seconds = 0.0, generate_seconds = 0.0;
  size_t kv_bytes_held = 0;            // the sequence's cache at the end
  size_t kv_bytes_after_prompt = 0;    // the sequence's cache right after the prompt (and its compression)
  std::optional<KvRecord> kv;          // what the KV method did (when one ran)
};

// One request's generation, stepped by the caller. Owns its sequence and KV compressor.
class Generator {
 public:
  // A new sequence of `engine` for this prompt. Throws tappa::Error (bad_input, context_overflow)
  // on an empty prompt, a prompt + max_tokens beyond the context, a bad KV spec or budget.
  Generator(Engine& engine, std::vector<int32_t> prompt, GenerateOptions options);
  // Continues a sequence whose prompt has already run (its logits give the first token): e.g. one
  // restored from saved state. Its KV policy and observer, if any, stay as the caller set them.
  Generator(Engine& engine, std::unique_ptr<Sequence> prepared, GenerateOptions options);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  bool done() const { return finish_ != FinishReason::running; }
  // The whole prompt has run (and been compressed): result() has its figures (prompt_seconds, kv).
  bool prompt_processed() const { return prompt_done_ >= prompt_.size(); }
  // What the next forward pass must compute for this request: a prompt chunk, or the last token.
  Engine::Step next_step();
  // After Engine::decode ran next_step(): samples the next token, applies the stop conditions and
  // returns the text that became final (streamable: a possible stop-string prefix or an unfinished
  // UTF-8 character is held back until it is decided).
  std::string advance();
  // Ends the request now (finish = cancelled); the sequence stays usable.
  void cancel();
  FinishReason finish() const { return finish_; }
  GenerateResult result() const;

  Sequence& sequence() { return *seq_; }
  const Sequence& sequence() const { return *seq_; }
  KvCompressor* compressor() { return comp_.get(); }
  int64_t n_generated() const { return static_cast<int64_t>(tokens_.size()); }
  int n_prompt() const { return static_cast<int>(prompt_.size()); }

 private:
  void prompt_done();
  std::string advance_sample();
  void finish_with(FinishReason r);
  std::string release_text(bool final);

  Engine& engine_;
  GenerateOptions opts_;
  std::vector<int32_t> prompt_;
  std::unique_ptr<Sequence> seq_;
  std::unique_ptr<KvCompressor> comp_;
  Sampler sampler_;
  size_t prompt_fed_ = 0;      // prompt tokens handed to next_step so far
  size_t prompt_done_ = 0;     // prompt tokens the engine has processed
  int32_t pending_ = -1;       // the sampled token to feed next
  std::string released_first_; // a prepared sequence's first token's text, for the first advance()
  std::vector<int32_t> tokens_;
  std::string text_;           // all generated text (stop string cut off once found)
  size_t released_ = 0;        // bytes of text_ handed out
  FinishReason finish_ = FinishReason::running;
  std::string stop_matched_;
  std::vector<TokenLogprob> prompt_lp_, lp_;
  int32_t eog_token_ = -1;
  std::optional<TokenLogprob> eog_lp_;
  int64_t t_start_ = 0, t_prompt_ = 0, t_end_ = 0;  // steady-clock ns
  size_t bytes_after_prompt_ = 0;
};

// One Engine::decode for every generator that is not done, then advance() on each. Returns each
// stepped generator with the text it released.
std::vector<std::pair<Generator*, std::string>> step_all(Engine& engine, std::span<Generator* const> generators,
                                                        const RunControl& control = {});

// One request from start to end; on_text receives each released piece (return false to stop:
// finish = cancelled). Throws what Generator throws; control.cancel ends it with finish = cancelled.
GenerateResult generate(Engine& engine, std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<bool(std::string_view)>& on_text = {}, const RunControl& control = {});

}  // namespace tappa
