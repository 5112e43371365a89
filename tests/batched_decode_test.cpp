// Engine::decode with many sequences (issue 14): sequences with different prompts, lengths and KV
// methods/budgets, decoded together, produce exactly what each produces alone. The batch computes
// decode rows in the per-token order (each row as a one-row call computes it) and prompts in the
// chunking they get alone, and each sequence attends over its own cache, so the logits are the same
// bits — asserted bit for bit, which is stronger than the greedy tokens being equal.
//
// Also: a prompt chunk riding in the same pass as other sequences' decodes (continuous batching),
// fork / truncate / save / restore, the errors of decode, and cancellation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kv/compressor.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "test_util.h"

namespace tappa {
namespace {

using test::slurp;

constexpr int kThreads = 2;

std::shared_ptr<Model> load_default() { return Model::load(test::default_model()); }

// Sixteen prompts of different lengths, cut from the prompt texts of tests/data.
std::vector<std::vector<int32_t>> prompts(const Tokenizer& tok, int n) {
  const std::string dir = test::source_dir() + "/tests/data/prompts/";
  const std::string text = slurp(dir + "prose_lighthouse.txt") + slurp(dir + "code_python_csv.txt") +
                           slurp(dir + "code_interval_tree.txt") + slurp(dir + "chat_chatml.txt");
  const std::vector<int32_t> all = tok.encode(text, true, false);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    const int len = 40 + (i * 37) % 260;  // 40 … 299 tokens
    const size_t start = static_cast<size_t>(i * 53) % (all.size() - len);
    std::vector<int32_t> p(all.begin() + start, all.begin() + start + len);
    p[0] = tok.bos() >= 0 ? tok.bos() : p[0];
    out.push_back(std::move(p));
  }
  return out;
}

// The KV method of sequence i: full caches and several compressed ones, budgets below the prompts.
kv::CompressorOptions method_of(int i) {
  static const char* methods[] = {"fullkv", "tappa", "snapkv", "streamingllm", "cake", "h2o", "pyramidkv", "tappa-head"};
  kv::CompressorFlags f;
  f.method = methods[i % 8];
  if (f.method != "fullkv") f.budget = 36 + 4 * (i % 5);
  if (f.method == "tappa" || f.method == "cake") f.decode_evict = true;
  return kv::make_compressor_options(f);
}

struct Outcome {
  std::vector<std::vector<int32_t>> tokens;  // generated, per sequence
  std::vector<std::vector<float>> logits;    // last logits, per sequence
};

// Each sequence on its own: prefill, then greedy decoding one token at a time.
Outcome alone(Engine& e, const Model& m, const std::vector<std::vector<int32_t>>& ps, int gen) {
  Outcome r;
  for (size_t i = 0; i < ps.size(); ++i) {
    auto seq = e.new_sequence();
    kv::KvCompressor comp(m, method_of(static_cast<int>(i)));
    if (comp.active()) seq->set_policy(&comp);
    std::vector<int32_t> out;
    std::span<const float> logits = e.eval(*seq, ps[i]);
    for (int g = 0; g < gen; ++g) {
      const int32_t next = argmax(logits);
      out.push_back(next);
      logits = e.eval(*seq, std::span<const int32_t>(&next, 1));
    }
    r.tokens.push_back(out);
    r.logits.emplace_back(logits.begin(), logits.end());
  }
  return r;
}

// All together: sequence i joins at step `join(i)` — its prompt rides in the pass that decodes the
// sequences already running — and then decodes with the others, one pass per step.
Outcome together(Engine& e, const Model& m, const std::vector<std::vector<int32_t>>& ps, int gen,
             int (*join)(int)) {
  const int n = static_cast<int>(ps.size());
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<std::unique_ptr<kv::KvCompressor>> comps;
  for (int i = 0; i < n; ++i) {
    seqs.push_back(e.new_sequence());
    comps.push_back(std::make_unique<kv::KvCompressor>(m, method_of(i)));
    if (comps.back()->active()) seqs.back()->set_policy(comps.back().get());
  }
  Outcome r;
  r.tokens.assign(n, {});
  std::vector<int32_t> next(n);
  std::vector<int> done(n, 0);
  for (int step = 0;; ++step) {
    std::vector<Engine::Step> steps;
    for (int i = 0; i < n; ++i) {
      if (join(i) == step) {
        steps.push_back({seqs[i].get(), ps[i]});
      } else if (join(i) < step && done[i] < gen) {
        steps.push_back({seqs[i].get(), std::span<const int32_t>(&next[i], 1)});
        ++done[i];
      }
    }
    if (steps.empty()) break;
    e.decode(steps);
    for (const Engine::Step& st : steps) {
      const int i = static_cast<int>(std::find_if(seqs.begin(), seqs.end(), [&](const auto& s) { return s.get() == st.seq; }) -
                                     seqs.begin());
      if (done[i] < gen) {
        next[i] = argmax(seqs[i]->logits());
        r.tokens[i].push_back(next[i]);
      }
    }
  }
  for (int i = 0; i < n; ++i) r.logits.emplace_back(seqs[i]->logits().begin(), seqs[i]->logits().end());
  return r;
}

void expect_same(const Outcome& a, const Outcome& b) {
  ASSERT_EQ(a.tokens.size(), b.tokens.size());
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    EXPECT_EQ(a.tokens[i], b.tokens[i]) << "sequence " << i << " (" << method_of(static_cast<int>(i)).method << ")";
    ASSERT_EQ(a.logits[i].size(), b.logits[i].size());
    EXPECT_EQ(0, std::memcmp(a.logits[i].data(), b.logits[i].data(), sizeof(float) * a.logits[i].size()))
        << "sequence " << i << ": last logits differ";
  }
}

class BatchedDecode : public ::testing::TestWithParam<int> {};

TEST_P(BatchedDecode, EverySequenceDecodesAsAlone) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  const int n = GetParam(), gen = 12;
  const auto ps = prompts(model->tokenizer(), n);
  Engine e(model, EngineOptions{kThreads, 512, 64});  // n_batch 64: longer prompts take several chunks
  const Outcome ref = alone(e, *model, ps, gen);
  // Every prompt in the first pass (prompts ride together), then all decode together.
  expect_same(ref, together(e, *model, ps, gen, [](int) { return 0; }));
  // Staggered: sequence i's prompt rides with the decodes of sequences 0 … i-1.
  if (n > 1) expect_same(ref, together(e, *model, ps, gen, [](int i) { return i; }));
}

INSTANTIATE_TEST_SUITE_P(Sizes, BatchedDecode, ::testing::Values(1, 4, 16));

TEST(BatchedDecode, GemmaLocalLayersAndQkNorm) {
  const std::string gemma = test::source_dir() + "/models/gemma-3-270m-q4_k_m.gguf";
  TAPPA_REQUIRE_MODEL(gemma);
  const auto model = Model::load(gemma);
  const auto ps = prompts(model->tokenizer(), 5);
  Engine e(model, EngineOptions{kThreads, 512, 512});
  expect_same(alone(e, *model, ps, 8), together(e, *model, ps, 8, [](int i) { return i / 2; }));
}

TEST(SequenceState, ForkTruncateSaveRestore) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  const auto ps = prompts(model->tokenizer(), 2);
  Engine e(model, EngineOptions{kThreads, 512, 512});
  auto a = e.new_sequence();
  e.eval(*a, ps[0]);
  const std::vector<uint8_t> state = a->save();
  auto b = a->fork();
  EXPECT_EQ(b->n_past(), a->n_past());
  const int32_t t = 42;
  const std::vector<float> la(e.eval(*a, std::span<const int32_t>(&t, 1)).begin(), a->logits().end());
  const std::vector<float> lb(e.eval(*b, std::span<const int32_t>(&t, 1)).begin(), b->logits().end());
  EXPECT_EQ(la, lb) << "a fork continues exactly as the original";
  // Restore into a fresh sequence: same continuation.
  auto c = e.new_sequence();
  c->restore(state);
  EXPECT_EQ(c->n_past(), static_cast<int64_t>(ps[0].size()));
  EXPECT_EQ(std::vector<int32_t>(c->tokens().begin(), c->tokens().end()), ps[0]);
  e.eval(*c, std::span<const int32_t>(&t, 1));
  EXPECT_EQ(std::vector<float>(c->logits().begin(), c->logits().end()), la);
  // Truncate back to the prompt and continue: same again.
  a->truncate(static_cast<int64_t>(ps[0].size()));
  e.eval(*a, std::span<const int32_t>(&t, 1));
  EXPECT_EQ(std::vector<float>(a->logits().begin(), a->logits().end()), la);
  // Bad states: one clear error each, the sequence left as it was.
  const int64_t before = c->n_past();
  for (size_t cut : {size_t{0}, size_t{3}, size_t{20}, state.size() / 2, state.size() - 1}) {
    const std::vector<uint8_t> bad(state.begin(), state.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(c->restore(bad), Error) << "cut at " << cut;
    EXPECT_EQ(c->n_past(), before);
  }
  std::vector<uint8_t> trailing = state;
  trailing.push_back(0);
  EXPECT_THROW(c->restore(trailing), Error);
  std::vector<uint8_t> lying = state;
  const int64_t huge = 1 << 20;
  std::memcpy(lying.data() + 20, &huge, sizeof huge);  // n_past beyond the context
  EXPECT_THROW(c->restore(lying), Error);
  // A state from another model shape.
  const std::string gemma = test::source_dir() + "/models/gemma-3-270m-q4_k_m.gguf";
  if (test::exists(gemma)) {
    Engine g(Model::load(gemma), EngineOptions{kThreads, 512, 512});
    auto s = g.new_sequence();
    try {
      s->restore(state);
      ADD_FAILURE() << "a state of another model shape was accepted";
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find("another model shape"), std::string::npos) << err.what();
    }
  }
}

TEST(SequenceState, TruncateRefusesACompressedCache) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  const auto ps = prompts(model->tokenizer(), 4);
  Engine e(model, EngineOptions{kThreads, 512, 512});
  auto s = e.new_sequence();
  kv::KvCompressor comp(*model, method_of(1));  // tappa, budget < prompt
  s->set_policy(&comp);
  e.eval(*s, ps[3]);
  EXPECT_THROW(s->truncate(10), Error);
}

TEST(EngineDecode, ErrorsAreOneLineAndLeaveSequencesUntouched) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  Engine e(model, EngineOptions{kThreads, 64, 512});
  Engine other(model, EngineOptions{kThreads, 64, 512});
  auto a = e.new_sequence(), b = e.new_sequence(), x = other.new_sequence();
  const std::vector<int32_t> t = {1, 2, 3};
  const auto code_of = [&](std::vector<Engine::Step> steps) {
    try {
      e.decode(steps);
    } catch (const Error& err) {
      EXPECT_EQ(std::string(err.what()).find('\n'), std::string::npos);
      return err.code();
    }
    return ErrorCode::internal;  // no error: the checks below fail on it
  };
  EXPECT_EQ(code_of({{a.get(), t}, {a.get(), t}}), ErrorCode::bad_input) << "a sequence twice";
  EXPECT_EQ(code_of({{a.get(), t}, {x.get(), t}}), ErrorCode::bad_input) << "a sequence of another engine";
  EXPECT_EQ(code_of({{a.get(), {}}}), ErrorCode::bad_input) << "no tokens";
  const std::vector<int32_t> bad = {1, model->config().n_vocab};
  EXPECT_EQ(code_of({{a.get(), t}, {b.get(), bad}}), ErrorCode::bad_input) << "token id out of range";
  const std::vector<int32_t> long_prompt(65, 1);
  EXPECT_EQ(code_of({{a.get(), t}, {b.get(), long_prompt}}), ErrorCode::context_overflow);
  EXPECT_EQ(code_of({}), ErrorCode::bad_input) << "no steps";
  EXPECT_EQ(a->n_past(), 0);
  EXPECT_EQ(b->n_past(), 0);
  EXPECT_EQ(a->cache().length(0, 0), 0);
}

TEST(EngineDecode, CancelLeavesTheSequenceAsBefore) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  const auto ps = prompts(model->tokenizer(), 2);
  Engine e(model, EngineOptions{kThreads, 512, 512});
  auto s = e.new_sequence();
  e.eval(*s, ps[0]);
  const int64_t n0 = s->n_past();
  const std::vector<uint8_t> before = s->save();
  // Cancel after the third layer of the next call (the progress callback runs between layers).
  CancelToken cancel;
  RunControl ctl;
  ctl.cancel = &cancel;
  int64_t seen = 0;
  ctl.on_progress = [&](int64_t done, int64_t total) {
    seen = total;
    if (done == 3) cancel.cancel();
  };
  try {
    e.eval(*s, ps[1], false, ctl);
    ADD_FAILURE() << "not cancelled";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::cancelled);
  }
  EXPECT_EQ(seen, model->config().n_layer);
  EXPECT_EQ(s->n_past(), n0);
  EXPECT_EQ(s->save(), before) << "the cache holds exactly what it held before the cancelled call";
  // And the sequence (and engine) go on working.
  cancel.reset();
  ctl.on_progress = nullptr;
  EXPECT_NO_THROW(e.eval(*s, ps[1], false, ctl));
  EXPECT_EQ(s->n_past(), n0 + static_cast<int64_t>(ps[1].size()));
}

}  // namespace
}  // namespace tappa
