// The public generation API (include/tappa/generate.h) on the default model: greedy text equals a
// hand-written eval loop; streamed pieces concatenate to the result; stop strings end the text
// before them even when they span several tokens and are never streamed; prompt log probabilities
// equal a direct log-softmax; requests stepped together (step_all) give what each gives alone;
// a KV method's record comes back; the KV wiring in one call (prefill_kv: policy, H2O's row observer,
// KVzip's replay) gives what generate() gives; cancellation ends a request with "cancelled".
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/generate.h"
#include "tappa/kv.h"
#include "tappa/model.h"
#include "test_util.h"

namespace tappa {
namespace {

struct Fixture {
  std::shared_ptr<Model> model = Model::load(test::default_model());
  Engine engine{model, EngineOptions{2, 1024, 512}};
  std::vector<int32_t> prompt(const std::string& text) {
    const Tokenizer& tok = model->tokenizer();
    return tok.encode(tok.apply_chat_template({{"user", text}}, true), true, true);
  }
};

TEST(Generate, GreedyEqualsAnEvalLoopAndStreamsItsText) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const auto p = f.prompt("Name three colours of the rainbow.");
  GenerateOptions o;
  o.max_tokens = 24;
  o.ignore_eos = true;
  std::string streamed;
  const GenerateResult r = generate(f.engine, p, o, [&](std::string_view s) {
    streamed += s;
    return true;
  });
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.finish, FinishReason::length);
  ASSERT_EQ(r.tokens.size(), 24u);
  // By hand.
  auto seq = f.engine.new_sequence();
  std::span<const float> logits = f.engine.eval(*seq, p);
  std::string text;
  for (int i = 0; i < 24; ++i) {
    const int32_t t = argmax(logits);
    EXPECT_EQ(t, r.tokens[i]) << "token " << i;
    text += f.model->tokenizer().token_to_piece(t);
    logits = f.engine.eval(*seq, std::span<const int32_t>(&t, 1));
  }
  EXPECT_EQ(text, r.text);
  EXPECT_EQ(r.n_prompt, static_cast<int>(p.size()));
}

TEST(Generate, StopStringsEndTheTextAndAreNeverStreamed) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const auto p = f.prompt("Count from one to twenty in words, separated by commas.");
  GenerateOptions o;
  o.max_tokens = 48;
  o.ignore_eos = true;
  const GenerateResult full = generate(f.engine, p, o);
  ASSERT_GT(full.text.size(), 12u);
  // A stop string taken from the middle of the free text, spanning a token boundary if possible.
  const std::string stop = full.text.substr(full.text.size() / 2, 5);
  o.stop = {"\x01never\x01", stop};
  std::string streamed;
  const GenerateResult r = generate(f.engine, p, o, [&](std::string_view s) {
    streamed += s;
    return true;
  });
  const size_t at = full.text.find(stop);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(r.text, full.text.substr(0, at));
  EXPECT_EQ(streamed, r.text) << "no part of the stop string was streamed";
  EXPECT_EQ(r.finish, FinishReason::stop);
  EXPECT_EQ(r.stop_matched, stop);
}

TEST(Generate, PromptLogprobsAreTheLogSoftmaxOfTheNextToken) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const auto p = f.prompt("The quick brown fox jumps over the lazy dog.");
  GenerateOptions o;
  o.max_tokens = 0;
  o.prompt_logprobs = true;
  o.logprobs = 3;
  o.prefill_chunk = 7;  // chunks that do not divide the prompt: the chunk boundaries must not matter
  const GenerateResult r = generate(f.engine, p, o);
  ASSERT_EQ(r.prompt_logprobs.size(), p.size() - 1);
  EXPECT_EQ(r.finish, FinishReason::length);
  auto seq = f.engine.new_sequence();
  const auto all = f.engine.eval(*seq, p, true);
  const int V = f.model->config().n_vocab;
  for (size_t i = 0; i + 1 < p.size(); ++i) {
    const std::span<const float> row = all.subspan(i * V, V);
    double mx = -INFINITY, sum = 0;
    for (float x : row) mx = std::max(mx, static_cast<double>(x));
    for (float x : row) sum += std::exp(x - mx);
    const double expect = row[p[i + 1]] - mx - std::log(sum);
    EXPECT_EQ(r.prompt_logprobs[i].token, p[i + 1]);
    // Chunked logits are the same bits as one pass (same per-chunk kernels), so only the float
    // rounding of the stored log probability separates the two: 1e-5 absolute.
    EXPECT_NEAR(r.prompt_logprobs[i].logprob, expect, 1e-5) << "position " << i;
    ASSERT_EQ(r.prompt_logprobs[i].top.size(), 3u);
    EXPECT_EQ(r.prompt_logprobs[i].top[0].first, argmax(row));
  }
}

TEST(Generate, TheEndOfGenerationTokenIsKeptAsideWithItsLogprob) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const auto p = f.prompt("Say only the word yes.");
  GenerateOptions o;
  o.max_tokens = 64;
  o.logprobs = 2;
  const GenerateResult r = generate(f.engine, p, o);
  ASSERT_EQ(r.finish, FinishReason::stop) << "the instruct model ends a short answer itself";
  ASSERT_TRUE(f.model->tokenizer().is_eog(r.eog_token));
  ASSERT_TRUE(r.eog_logprob.has_value());
  EXPECT_EQ(r.eog_logprob->token, r.eog_token);
  EXPECT_EQ(r.logprobs.size(), r.tokens.size()) << "the end token is in neither list";
  // Greedy: the end token was the most likely one at its position.
  ASSERT_EQ(r.eog_logprob->top.size(), 2u);
  EXPECT_EQ(r.eog_logprob->top[0].first, r.eog_token);
  EXPECT_LE(r.eog_logprob->logprob, 0.0f);
  // Without log probabilities the token is still named.
  o.logprobs = -1;
  const GenerateResult q = generate(f.engine, p, o);
  EXPECT_EQ(q.eog_token, r.eog_token);
  EXPECT_FALSE(q.eog_logprob.has_value());
}

TEST(Generate, RequestsSteppedTogetherGiveWhatEachGivesAlone) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const std::vector<std::string> asks = {"What is a KV cache?", "Write a haiku about the sea.",
                                         "List two prime numbers.", "Say hello in French."};
  std::vector<GenerateOptions> opts(asks.size());
  for (size_t i = 0; i < asks.size(); ++i) {
    opts[i].max_tokens = 10 + 4 * static_cast<int>(i);
    if (i % 2 == 1) opts[i].kv = {"snapkv:window=8", 16};
  }
  std::vector<GenerateResult> alone;
  for (size_t i = 0; i < asks.size(); ++i) alone.push_back(generate(f.engine, f.prompt(asks[i]), opts[i]));
  std::vector<std::unique_ptr<Generator>> gens;
  std::vector<Generator*> ptrs;
  std::vector<std::string> streamed(asks.size());
  for (size_t i = 0; i < asks.size(); ++i) {
    gens.push_back(std::make_unique<Generator>(f.engine, f.prompt(asks[i]), opts[i]));
    ptrs.push_back(gens.back().get());
  }
  for (int step = 0; step < 100; ++step) {
    bool any = false;
    for (auto& [g, text] : step_all(f.engine, ptrs)) {
      any = true;
      for (size_t i = 0; i < gens.size(); ++i)
        if (gens[i].get() == g) streamed[i] += text;
    }
    if (!any) break;
  }
  for (size_t i = 0; i < asks.size(); ++i) {
    const GenerateResult r = gens[i]->result();
    EXPECT_EQ(r.tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(streamed[i], r.text);
    EXPECT_EQ(r.kv.has_value(), i % 2 == 1);
  }
  ASSERT_TRUE(alone[1].kv);
  EXPECT_TRUE(alone[1].kv->compressed) << "a 16-token budget compresses the prompt";
  EXPECT_LT(alone[1].kv_bytes_held, alone[0].kv_bytes_held);
}

// prefill_kv is the wiring `tappa run/compress/bench` use: the method as the sequence's policy (kept
// for decode eviction), H2O's row observer for the prompt only, KVzip's replay; decoding on from its
// sequence gives generate()'s tokens and record. fullkv: no compressor, unless kv_record_always.
TEST(Generate, PrefillKvWiresAMethodAsGenerateDoes) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const auto p = f.prompt("Explain in a few sentences why the sky is blue, and why sunsets are red.");
  ASSERT_GT(p.size(), 40u);
  for (const std::string spec : {"h2o:window=8", "kvzip:window=8", "tappa:window=8", "fullkv"}) {
    SCOPED_TRACE(spec);
    KvOptions kv;
    kv.method = spec;
    if (spec != "fullkv") kv.budget = 24;
    GenerateOptions o;
    o.max_tokens = 8;
    o.ignore_eos = true;
    o.kv = kv;
    const GenerateResult want = generate(f.engine, p, o);
    KvSequence s = prefill_kv(f.engine, p, kv);
    ASSERT_TRUE(s.sequence);
    EXPECT_EQ(s.sequence->observer(), nullptr);  // H2O's observer is for the prompt only
    if (spec == "fullkv") {
      EXPECT_EQ(s.compressor, nullptr);
      EXPECT_EQ(s.sequence->policy(), nullptr);
      EXPECT_FALSE(want.kv);
    } else {
      ASSERT_TRUE(s.compressor);
      EXPECT_EQ(s.sequence->policy(), s.compressor.get());
      const KvRecord& r = s.compressor->record();
      EXPECT_TRUE(r.compressed) << r.skipped_reason;  // for kvzip: its replay ran
      EXPECT_EQ(r.h2o_from_engine_rows, spec.rfind("h2o", 0) == 0);
      EXPECT_EQ(r.bytes_held_after, s.sequence->cache().bytes_held());
      ASSERT_TRUE(want.kv);
      EXPECT_EQ(want.kv->bytes_held_after, r.bytes_held_after);
      EXPECT_EQ(want.kv_bytes_after_prompt, r.bytes_held_after);
    }
    GenerateOptions on = o;
    on.kv = {};
    Generator g(f.engine, std::move(s.sequence), on);
    Generator* const one[1] = {&g};
    while (!g.done()) step_all(f.engine, one);
    EXPECT_EQ(g.result().tokens, want.tokens);
  }
  // kv_record_always: fullkv's record (nothing evicted, per-layer figures) and the bytes after the prompt.
  GenerateOptions o;
  o.max_tokens = 4;
  o.kv_record_always = true;
  const GenerateResult r = generate(f.engine, p, o);
  ASSERT_TRUE(r.kv);
  EXPECT_EQ(r.kv->method, "fullkv");
  EXPECT_FALSE(r.kv->compressed);
  EXPECT_EQ(r.kv->n_prompt, static_cast<int>(p.size()));
  EXPECT_EQ(r.kv->layers.size(), static_cast<size_t>(f.model->config().n_layer));
  auto full = f.engine.new_sequence();
  f.engine.eval(*full, p);
  EXPECT_EQ(r.kv_bytes_after_prompt, full->cache().bytes_held());
  EXPECT_EQ(r.kv->bytes_held_after, r.kv_bytes_after_prompt);
}

TEST(Generate, CancelAndErrors) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  Fixture f;
  const auto p = f.prompt("Tell me a long story.");
  GenerateOptions o;
  o.max_tokens = 64;
  o.ignore_eos = true;
  int pieces = 0;
  const GenerateResult r = generate(f.engine, p, o, [&](std::string_view) { return ++pieces < 3; });
  EXPECT_EQ(r.finish, FinishReason::cancelled);
  EXPECT_LT(r.tokens.size(), 64u);
  CancelToken cancel;
  cancel.cancel();
  RunControl ctl;
  ctl.cancel = &cancel;
  EXPECT_EQ(generate(f.engine, p, o, {}, ctl).finish, FinishReason::cancelled);
  const auto code = [&](const GenerateOptions& bad, std::vector<int32_t> prompt) {
    try {
      Generator g(f.engine, std::move(prompt), bad);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::internal;
  };
  GenerateOptions too_long = o;
  too_long.max_tokens = 5000;
  EXPECT_EQ(code(too_long, p), ErrorCode::context_overflow);
  EXPECT_EQ(code(o, {}), ErrorCode::bad_input);
  GenerateOptions bad_kv = o;
  bad_kv.kv = {"tappa:alpha=oops", 64};
  EXPECT_EQ(code(bad_kv, p), ErrorCode::bad_input);
  GenerateOptions no_budget = o;
  no_budget.kv = {"snapkv", std::nullopt};
  EXPECT_EQ(code(no_budget, p), ErrorCode::bad_input);
}

}  // namespace
}  // namespace tappa
