// KVzip scorer (src/kv/kvzip.cpp) end to end on a tiny random-weight model: the rows the compressor
// keeps after its replay must be exactly those an independent recomputation picks — the engine's own
// attention rows of the replay queries, watched by a test observer on a separate sequence, reduced
// by the KVzip rule written out here (max over the query group and the replay queries, keys of the
// call's own chunk only, the first n-sink keys always first), then top-b per KV head.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>

#include "kv/compressor.h"
#include "kv/spec.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/generate.h"
#include "tappa/model.h"
#include "tappa/tokenizer.h"
#include "test_util.h"

namespace tappa {
namespace {

constexpr int kN = 48;      // prompt tokens
constexpr int kW = 8;       // protected window
constexpr int kBudget = 20; // tokens per layer, window included → 12 prefix rows kept

// Every attention row of query positions >= n_prompt, by (layer, head, position).
class AllRows : public Observer {
 public:
  explicit AllRows(int n_prompt) : n_(n_prompt) {}
  bool wants_attention_row(int, int, int64_t pos) override { return pos >= n_; }
  void on_attention_row(int layer, int head, int64_t pos, const float* p, int n) override {
    std::lock_guard<std::mutex> lock(mu_);
    rows[{layer, head, pos}] = std::vector<float>(p, p + n);
  }
  std::map<std::tuple<int, int, int64_t>, std::vector<float>> rows;

 private:
  int n_;
  std::mutex mu_;
};

std::vector<int32_t> prompt_tokens() {
  std::vector<int32_t> t(kN);
  for (int i = 0; i < kN; ++i) t[i] = static_cast<int32_t>((i * 37 + 11) % 1000 + 1);
  return t;
}

// Kept prefix positions of every (layer, KV head) under a reduction of the replay rows: `combine`
// folds one attention value into a key's running score (max for KVzip).
template <class Combine>
std::vector<std::vector<int>> reference_keep(const Model& model, Engine& engine, int chunk, int overlap, Combine combine) {
  const ModelConfig& c = model.config();
  const int H = c.n_head, H_kv = c.n_head_kv, G = H / H_kv, P = kN - kW, b = kBudget - kW;
  const auto prompt = prompt_tokens();
  auto base = engine.new_sequence();
  engine.eval(*base, prompt);
  std::vector<std::vector<double>> score(static_cast<size_t>(c.n_layer) * H_kv, std::vector<double>(kN, 0.0));
  for (int begin = 0; begin < kN; begin += chunk) {
    const int end = std::min(kN, begin + chunk);
    // No tokenizer: the request is empty, later chunks quote the previous chunk's last tokens.
    std::vector<int32_t> call(prompt.begin() + std::max(0, begin > 0 ? begin - overlap : 0), prompt.begin() + begin);
    call.insert(call.end(), prompt.begin() + begin, prompt.begin() + end);
    auto fork = base->fork();
    AllRows obs(kN);
    fork->set_observer(&obs);
    engine.eval(*fork, call);
    for (const auto& [key, row] : obs.rows) {
      const auto [l, h, pos] = key;
      auto& s = score[static_cast<size_t>(l) * H_kv + h / G];
      for (int j = begin; j < end; ++j) s[j] = combine(s[j], row[j]);
    }
  }
  std::vector<std::vector<int>> keep;
  for (auto& s : score) {
    for (int j = 0; j < 4 && j < P; ++j) s[j] = 1e30;  // n-sink = 4: always kept
    std::vector<int> idx(P);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int x, int y) { return s[x] > s[y]; });
    idx.resize(b);
    std::sort(idx.begin(), idx.end());
    keep.push_back(idx);
  }
  return keep;
}

std::vector<std::vector<int>> compressor_keep(const Model& model, Engine& engine, const std::string& spec) {
  const ModelConfig& c = model.config();
  kv::KvCompressor comp(model, kv::make_spec_options(spec, kBudget, std::nullopt));
  auto seq = engine.new_sequence();
  seq->set_policy(&comp);
  engine.eval(*seq, prompt_tokens());
  EXPECT_TRUE(comp.awaiting_replay());
  EXPECT_EQ(seq->cache().length(0, 0), kN) << "nothing may be evicted before the replay";
  comp.replay(engine, *seq);
  EXPECT_FALSE(comp.awaiting_replay());
  EXPECT_TRUE(comp.record().compressed);
  std::vector<std::vector<int>> keep;
  for (int l = 0; l < c.n_layer; ++l)
    for (int h = 0; h < c.n_head_kv; ++h) {
      const std::vector<int>& pos = comp.positions(l, h);
      EXPECT_EQ(seq->cache().length(l, h), kBudget);
      std::vector<int> prefix(pos.begin(), pos.begin() + std::min<size_t>(pos.size(), kBudget - kW));
      keep.push_back(prefix);
    }
  return keep;
}

class KvKvzip : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Model::random("llama-tiny", 3, true);
    EngineOptions eo;
    eo.n_threads = 2;
    eo.n_ctx = 256;
    engine_ = std::make_unique<Engine>(model_, eo);
  }
  std::shared_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
};

auto max_rule = [](double s, double a) { return std::max(s, a); };
auto sum_rule = [](double s, double a) { return s + a; };

TEST_F(KvKvzip, KeepsTheKeysWithTheLargestReplayAttention) {
  const auto want = reference_keep(*model_, *engine_, kN, 8, max_rule);
  const auto got = compressor_keep(*model_, *engine_, "kvzip:window=8");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "layer " << i / 2 << " KV head " << i % 2;
  // The check can tell rules apart: summing the attention (H2O-like) keeps other rows somewhere.
  EXPECT_NE(reference_keep(*model_, *engine_, kN, 8, sum_rule), want);
}

TEST_F(KvKvzip, ChunkedReplayScoresEachChunkFromItsOwnCall) {
  const auto want = reference_keep(*model_, *engine_, 16, 4, max_rule);
  const auto got = compressor_keep(*model_, *engine_, "kvzip:window=8:kvzip-chunk=16:kvzip-overlap=4");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "layer " << i / 2 << " KV head " << i % 2;
  EXPECT_NE(reference_keep(*model_, *engine_, kN, 8, max_rule), want) << "chunking changes nothing: a weak test";
}

TEST_F(KvKvzip, DecodingBeforeTheReplayIsAnError) {
  kv::KvCompressor comp(*model_, kv::make_spec_options("kvzip+tappa:window=8", kBudget, std::nullopt));
  auto seq = engine_->new_sequence();
  seq->set_policy(&comp);
  engine_->eval(*seq, prompt_tokens());
  const int32_t one[1] = {5};
  EXPECT_THROW(engine_->eval(*seq, one), Error);
}

TEST_F(KvKvzip, BadKnobsAreOneLineErrors) {
  for (const char* spec : {"kvzip:kvzip-chunk=0", "kvzip:kvzip-chunk=2.5", "kvzip:kvzip-overlap=-1",
                           "kvzip+tappa:cascading=1", "kvzip:kvzip-nope=3"}) {
    try {
      kv::parse_spec(spec);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(kv::parse_spec("kvzip:kvzip-chunk=512:kvzip-overlap=8"));
}

// Through the public Generator on the default model (real tokenizer: the request and the chat turn
// are tokenized): the replay runs after the prompt, the cache ends compressed, generation goes on.
TEST(KvKvzipModel, GeneratorRunsTheReplayBeforeDecoding) {
  const std::string path = test::default_model();
  TAPPA_REQUIRE_MODEL(path);
  const auto model = Model::load(path);
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 1024;
  Engine engine(model, eo);
  std::string text;
  for (int i = 0; i < 12; ++i) text += "The quick brown fox number " + std::to_string(i) + " jumps over the lazy dog. ";
  const std::vector<int32_t> prompt = model->tokenizer().encode(text, true, false);
  ASSERT_GT(prompt.size(), 128u);
  GenerateOptions go;
  go.max_tokens = 4;
  go.ignore_eos = true;
  go.kv.method = "kvzip+tappa";
  go.kv.budget = 64;
  Generator g(engine, prompt, go);
  Generator* one[1] = {&g};
  while (!g.done()) step_all(engine, one);
  EXPECT_EQ(g.result().tokens.size(), 4u);
  const KvRecord& rec = g.compressor()->record();
  EXPECT_TRUE(rec.compressed) << rec.skipped_reason;
  EXPECT_TRUE(rec.skipped_reason.empty()) << rec.skipped_reason;
  int64_t kept = 0;
  for (const KvLayerRecord& l : rec.layers) kept += l.kept;
  const ModelConfig& c = model->config();
  // tappa's shares keep the average at C = 64 per layer and KV head (the total is preserved exactly).
  EXPECT_EQ(kept, static_cast<int64_t>(64) * c.n_layer * c.n_head_kv);
}

}  // namespace
}  // namespace tappa
