// The generation loop (include/tappa/generate.h): prompt in chunks (or whole, under a KV method),
// sampling, stop conditions, streaming that never hands out half a stop string or half a UTF-8
// character, log probabilities.
#include "tappa/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "tappa/error.h"

namespace tappa {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Log-softmax of one row at `token`, and the k most likely tokens (sums in double).
TokenLogprob logprob_of(std::span<const float> logits, int32_t token, int k) {
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprob t;
  t.token = token;
  t.logprob = static_cast<float>(logits[token] - lse);
  if (k > 0) {
    std::vector<int32_t> idx(logits.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
    const size_t kk = std::min<size_t>(static_cast<size_t>(k), idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(kk), idx.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (size_t i = 0; i < kk; ++i) t.top.emplace_back(idx[i], static_cast<float>(logits[idx[i]] - lse));
  }
  return t;
}

// Bytes at the end of s that start a UTF-8 sequence not yet complete (0 … 3).
size_t incomplete_utf8_tail(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::running: return "running";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
  }
  return "running";
}

Generator::Generator(Engine& engine, std::vector<int32_t> prompt, GenerateOptions options)
    : engine_(engine), opts_(std::move(options)), prompt_(std::move(prompt)), sampler_(opts_.sampling) {
  if (prompt_.empty()) throw Error("the prompt is empty");
  if (opts_.max_tokens < 0) throw Error("max_tokens must be >= 0, got " + std::to_string(opts_.max_tokens));
  if (opts_.logprobs > 100) throw Error("logprobs must be at most 100, got " + std::to_string(opts_.logprobs));
  for (const std::string& s : opts_.stop)
    if (s.empty()) throw Error("a stop string is empty");
  seq_ = engine_.new_sequence();
  const int64_t need = static_cast<int64_t>(prompt_.size()) + opts_.max_tokens;
  if (need > seq_->n_ctx())
    throw Error(ErrorCode::context_overflow, "prompt (" + std::to_string(prompt_.size()) + " tokens) plus " +
                                                 std::to_string(opts_.max_tokens) + " to generate exceeds the context of " +
                                                 std::to_string(seq_->n_ctx()) + " tokens");
  if (opts_.kv.method != "fullkv" || opts_.kv.budget || opts_.kv.ratio || opts_.kv_record_always)
    comp_ = attach_kv(engine_, *seq_, opts_.kv, static_cast<int>(prompt_.size()), opts_.kv_record_always);
}

Generator::Generator(Engine& engine, std::unique_ptr<Sequence> prepared, GenerateOptions options)
    : engine_(engine), opts_(std::move(options)), sampler_(opts_.sampling) {
  if (!prepared) throw Error("Generator: no sequence");
  if (prepared->n_past() == 0 || prepared->logits().empty()) throw Error("Generator: the sequence has not run a prompt yet");
  if (opts_.max_tokens < 0) throw Error("max_tokens must be >= 0, got " + std::to_string(opts_.max_tokens));
  for (const std::string& s : opts_.stop)
    if (s.empty()) throw Error("a stop string is empty");
  if (prepared->n_past() + opts_.max_tokens > prepared->n_ctx())
    throw Error(ErrorCode::context_overflow, "the sequence (" + std::to_string(prepared->n_past()) + " tokens) plus " +
                                                 std::to_string(opts_.max_tokens) + " to generate exceeds its context of " +
                                                 std::to_string(prepared->n_ctx()) + " tokens");
  seq_ = std::move(prepared);
  const std::span<const int32_t> t = seq_->tokens();
  prompt_.assign(t.begin(), t.end());
  prompt_fed_ = prompt_done_ = prompt_.size();
  t_start_ = t_prompt_ = now_ns();
  bytes_after_prompt_ = seq_->cache().bytes_held();
  if (opts_.max_tokens == 0) {
    finish_with(FinishReason::length);
    return;
  }
  // The first token comes from the logits the sequence holds (its text is handed out by the first
  // advance(); a first token that ends the generation leaves it done here).
  released_first_ = advance_sample();
}

Generator::~Generator() = default;

Engine::Step Generator::next_step() {
  if (done()) throw Error("next_step: the generation is finished");
  if (prompt_fed_ < prompt_.size()) {
    // Under a KV method the whole prompt goes in one pass (the compressor works layer by layer on
    // all of it); otherwise in chunks, so that other requests' decodes are not held up by it.
    size_t n = prompt_.size() - prompt_fed_;
    if (!comp_) n = std::min<size_t>(n, static_cast<size_t>(opts_.prefill_chunk > 0 ? opts_.prefill_chunk : engine_.n_batch()));
    if (t_start_ == 0) t_start_ = now_ns();
    Engine::Step st{seq_.get(), std::span<const int32_t>(prompt_.data() + prompt_fed_, n), opts_.prompt_logprobs};
    prompt_fed_ += n;
    return st;
  }
  return {seq_.get(), std::span<const int32_t>(&pending_, 1), false};
}

void Generator::prompt_done() {
  kv_prompt_done(engine_, *seq_, comp_.get());  // kvzip's replay and eviction; H2O's observer off
  t_prompt_ = now_ns();
  bytes_after_prompt_ = seq_->cache().bytes_held();
}

void Generator::finish_with(FinishReason r) {
  finish_ = r;
  t_end_ = now_ns();
}

std::string Generator::release_text(bool final) {
  size_t safe = text_.size();
  if (!final) {
    // Hold back the longest tail that could still grow into a stop string, and a split character.
    size_t hold = 0;
    for (const std::string& s : opts_.stop)
      for (size_t len = std::min(s.size() - 1, text_.size() - released_); len > hold; --len)
        if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
          hold = len;
          break;
        }
    hold = std::max(hold, incomplete_utf8_tail(text_));
    safe = text_.size() - std::min(hold, text_.size() - released_);
  }
  std::string out = text_.substr(released_, safe - released_);
  released_ = safe;
  return out;
}

std::string Generator::advance() {
  std::string first = std::move(released_first_);  // a prepared sequence's first token (constructor)
  released_first_.clear();
  if (done()) return first;
  return first + advance_sample();
}

std::string Generator::advance_sample() {
  const std::span<const float> logits = seq_->logits();
  const int V = engine_.model().config().n_vocab;
  if (prompt_done_ < prompt_.size()) {
    const size_t n = prompt_fed_ - prompt_done_;  // the chunk just computed
    if (opts_.prompt_logprobs) {
      // Row i predicts prompt token prompt_done_ + i + 1 (the chunk's last row: the next chunk's first).
      for (size_t i = 0; i < n && prompt_done_ + i + 1 < prompt_.size(); ++i)
        prompt_lp_.push_back(logprob_of(logits.subspan(i * V, V), prompt_[prompt_done_ + i + 1], std::max(opts_.logprobs, 0)));
    }
    prompt_done_ += n;
    if (prompt_done_ < prompt_.size()) return "";
    prompt_done();
    if (opts_.max_tokens == 0) {
      finish_with(FinishReason::length);
      return "";
    }
  }
  // The distribution of the next token: the last row of what was just computed.
  const std::span<const float> last = logits.subspan(logits.size() - V, V);
  const int32_t token = sampler_.sample(last);
  if (opts_.logprobs >= 0) lp_.push_back(logprob_of(last, token, opts_.logprobs));
  const Tokenizer& tok = engine_.model().tokenizer();
  if (!opts_.ignore_eos && tok.is_eog(token)) {
    if (opts_.logprobs >= 0) {  // an end-of-generation token is not part of the answer: kept aside
      eog_lp_ = std::move(lp_.back());
      lp_.pop_back();
    }
    eog_token_ = token;
    finish_with(FinishReason::stop);
    return release_text(true);
  }
  tokens_.push_back(token);
  const size_t before = text_.size();
  text_ += tok.token_to_piece(token);
  if (opts_.stop_at_newline) {
    const size_t first = text_.find_first_not_of(" \t\r\n");
    if (first != std::string::npos) {
      const size_t nl = text_.find('\n', first);
      if (nl != std::string::npos) {
        text_.resize(nl);
        finish_with(FinishReason::stop);
        return release_text(true);
      }
    }
  }
  // The earliest stop string that ends in the new text (it may have begun in earlier pieces).
  size_t cut = std::string::npos;
  for (const std::string& s : opts_.stop) {
    const size_t from = before >= s.size() ? before - s.size() + 1 : 0;
    const size_t at = text_.find(s, from);
    if (at != std::string::npos && at < cut) {
      cut = at;
      stop_matched_ = s;
    }
  }
  if (cut != std::string::npos) {
    text_.resize(std::max(cut, released_));
    finish_with(FinishReason::stop);
    return release_text(true);
  }
  if (static_cast<int>(tokens_.size()) >= opts_.max_tokens) {
    finish_with(FinishReason::length);
    return release_text(true);
  }
  pending_ = token;
  return release_text(false);
}

void Generator::cancel() {
  if (done()) return;
  if (t_prompt_ == 0) t_prompt_ = now_ns();
  finish_with(FinishReason::cancelled);
}

GenerateResult Generator::result() const {
  GenerateResult r;
  r.text = text_;
  r.tokens = tokens_;
  r.n_prompt = static_cast<int>(prompt_.size());
  r.finish = finish_;
  r.stop_matched = stop_matched_;
  r.prompt_logprobs = prompt_lp_;
  r.logprobs = lp_;
  r.eog_token = eog_token_;
  r.eog_logprob = eog_lp_;
  const int64_t end = t_end_ ? t_end_ : now_ns();
  if (t_start_) r.prompt_seconds = 1e-9 * static_cast<double>((t_prompt_ ? t_prompt_ : end) - t_start_);
  if (t_prompt_) r.generate_seconds = 1e-9 * static_cast<double>(end - t_prompt_);
  r.kv_bytes_held = seq_->cache().bytes_held();
  r.kv_bytes_after_prompt = bytes_after_prompt_;
  if (comp_) r.kv = comp_->record();
  return r;
}

std::vector<std::pair<Generator*, std::string>> step_all(Engine& engine, std::span<Generator* const> generators,
                                                        const RunControl& control) {
  std::vector<Generator*> live;
  std::vector<Engine::Step> steps;
  for (Generator* g : generators)
    if (g && !g->done()) {
      live.push_back(g);
      steps.push_back(g->next_step());
    }
  std::vector<std::pair<Generator*, std::string>> out;
  if (steps.empty()) return out;
  engine.decode(steps, control);
  for (Generator* g : live) out.emplace_back(g, g->advance());
  return out;
}

GenerateResult generate(Engine& engine, std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<bool(std::string_view)>& on_text, const RunControl& control) {
  Generator g(engine, std::vector<int32_t>(prompt.begin(), prompt.end()), options);
  Generator* one[1] = {&g};
  while (!g.done()) {
    if (control.cancelled()) {
      g.cancel();
      break;
    }
    try {
      for (auto& [gen, text] : step_all(engine, one, control))
        if (on_text && !text.empty() && !on_text(text)) gen->cancel();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::cancelled) throw;
      g.cancel();
    }
  }
  return g.result();
}

}  // namespace tappa
