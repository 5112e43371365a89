// Query-head granularity of KV compression (issue #15 item 2: the TAPPA harness's one keep-set per query
// head after repeat_kv, its larger memory counted). Checked against references that do not go through
// the query-head code path:
//   - the numpy reference (tests/kv_reference.py, case "query_head" of tests/data/kv/vectors.json): the
//     official harness's update_kv after repeat_kv (SnapKV avg5 / max7, H2O with the official mask,
//     PyramidKV) on the tiny GGUF model qwen2_tiny, its q/k from scripts/tiny_reference.py's fp64
//     forward; kept positions exactly, kept scores within a tolerance, bytes H/H_kv x the kv-head run;
//   - a direct recomputation of SnapKV's keep-set of every query head from the queries and keys the
//     engine hands an observer (softmax of the window rows, summed, top b), in this file;
//   - the same model turned into its multi-head twin (K/V projection rows repeated G times, so every
//     query head has its own KV head holding exactly its group's keys): there the ordinary kv-head path
//     keeps one set per query head by construction, so kept positions and next-token logits must agree;
//   - bytes: H/H_kv times the kv-head cache at equal budget on the default model (SmolLM2: x3);
//   - a query-head sequence decodes the same greedy tokens and logits batched as alone;
//   - eval-kv's restored prefill and a saved / restored sequence give the live run's cache and tokens.
// The twin and the direct recomputation are C++ because they need the model's weight views and the
// engine's own q/k (internal headers); they cover what the numpy case does not: every method, decoding
// on the repeated lists, logits, other cache formats and backends.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "evalkv/replay.h"
#include "kv/compressor.h"
#include "kv/spec.h"
#include "model/weights.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "tappa/observer.h"
#include "test_util.h"

namespace tappa {
namespace {

EngineOptions small_engine(int n_ctx = 256) {
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = n_ctx;
  return eo;
}

std::vector<int32_t> test_prompt(int n, int vocab) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = static_cast<int32_t>((i * 53 + 7) % (vocab - 1) + 1);
  return p;
}

// The multi-head twin of a random GQA model: same seed (same weights), n_head_kv = n_head, and each
// KV head's rows of wk / wv copied to the G query heads of its group. The BF16 rows are copied
// bit for bit, so every twin K/V head equals its KV head exactly. `storage` keeps the new matrices.
std::shared_ptr<Model> multi_head_twin(const std::string& shape, uint64_t seed, std::vector<std::vector<uint8_t>>& storage) {
  auto twin = Model::random(shape, seed, true);
  // A test-only edit of a model nobody else holds yet (the Model object itself is not const).
  ModelConfig& c = const_cast<ModelConfig&>(twin->config());
  ModelWeights& w = const_cast<ModelWeights&>(twin->weights());
  const int G = c.n_head / c.n_head_kv, HD = c.head_dim;
  for (LayerWeights& L : w.layers) {
    for (WeightView* m : {&L.wk, &L.wv}) {
      EXPECT_EQ(m->type, TensorType::BF16);
      EXPECT_EQ(L.bk, nullptr);  // llama-tiny: no K/V bias to repeat
      const size_t row = static_cast<size_t>(m->cols) * 2;
      std::vector<uint8_t> rep(static_cast<size_t>(c.n_head) * HD * row);
      for (int h = 0; h < c.n_head; ++h)
        std::memcpy(rep.data() + static_cast<size_t>(h) * HD * row, m->data + static_cast<size_t>(h / G) * HD * row, HD * row);
      storage.push_back(std::move(rep));
      m->data = storage.back().data();
      m->rows = static_cast<int64_t>(c.n_head) * HD;
    }
  }
  c.n_head_kv = c.n_head;
  return twin;
}

struct CompressedRun {
  std::vector<std::vector<std::vector<int>>> pos;  // [layer][list]: kept positions, sorted
  std::vector<std::vector<float>> logits;          // after the prompt, then after each decoded token
  std::vector<int32_t> tokens;
  kv::CompressionRecord rec;
  std::vector<int> decode_lengths;  // every list's length after the last decoded token
  int lists = 0;
};

CompressedRun compress_and_decode(const std::shared_ptr<Model>& model, const std::string& spec, int budget,
                                  const std::vector<int32_t>& prompt, int n_decode, const EngineOptions& eo = small_engine()) {
  Engine engine(model, eo);
  kv::KvCompressor comp(*model, kv::make_spec_options(spec, budget, std::nullopt));
  auto seq = engine.new_sequence();
  seq->set_policy(&comp);
  if (Observer* o = comp.observer()) {  // h2o: sums the engine's own attention rows
    seq->set_observer(o);
    comp.expect_prompt(static_cast<int>(prompt.size()));
  }
  CompressedRun r;
  std::span<const float> logits = engine.eval(*seq, prompt);
  seq->set_observer(nullptr);
  comp.replay(engine, *seq);
  r.rec = comp.record();
  r.lists = seq->cache().n_head_kv();
  const ModelConfig& c = model->config();
  r.pos.resize(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l)
    for (int h = 0; h < r.lists; ++h) {
      std::vector<int> p = comp.positions(l, h);
      std::sort(p.begin(), p.end());
      r.pos[l].push_back(p);
    }
  for (int t = 0; t <= n_decode; ++t) {
    r.logits.emplace_back(logits.begin(), logits.end());
    if (t == n_decode) break;
    const int32_t one[1] = {argmax(logits)};
    r.tokens.push_back(one[0]);
    logits = engine.eval(*seq, one);
  }
  r.rec = comp.record();  // the prefill's figures and the decode eviction's
  r.decode_lengths.clear();
  for (int l = 0; l < c.n_layer; ++l)
    for (int h = 0; h < r.lists; ++h) r.decode_lengths.push_back(seq->cache().length(l, h));
  return r;
}

void expect_logits_near(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  EXPECT_LT(worst, 1e-3) << what;
}

// Query-head granularity on the GQA model = kv-head granularity on its multi-head twin, for scorers
// that read attention (snapkv, h2o from its own rows), pre-RoPE statistics (expected-attention), a
// replay (kvzip), and for per-layer (pyramidkv, tappa with cascading) and score-based (adakv) budgets.
TEST(KvQueryHead, MatchesTheMultiHeadTwinOnATinyModel) {
  std::vector<std::vector<uint8_t>> storage;
  const auto gqa = Model::random("llama-tiny", 11, true);
  const auto twin = multi_head_twin("llama-tiny", 11, storage);
  const ModelConfig& c = gqa->config();
  ASSERT_GT(c.n_head / c.n_head_kv, 1);
  const std::vector<int32_t> prompt = test_prompt(64, c.n_vocab);
  for (const std::string m : {"snapkv", "snapkv:pool=max7", "h2o", "h2o:h2o-official-mask=1", "pyramidkv", "tappa",
                              
                              "cake:decode-evict=1", "snapkv:decode-evict=1", "expected-attention+adakv", "kvzip", "streamingllm:streaming-first=1"}) {
    SCOPED_TRACE(m);
    const CompressedRun q = compress_and_decode(gqa, m + ":window=8:granularity=query-head", 24, prompt, 4);
    const CompressedRun t = compress_and_decode(twin, m + ":window=8", 24, prompt, 4);
    ASSERT_TRUE(q.rec.compressed) << q.rec.skipped_reason;
    EXPECT_EQ(q.rec.h2o_from_engine_rows, t.rec.h2o_from_engine_rows);
    EXPECT_EQ(q.rec.decode_evicted, t.rec.decode_evicted);
    EXPECT_EQ(q.decode_lengths, t.decode_lengths);
    // The engine's rows are exact-causal: the official mask's quirk is computed by h2o itself.
    if (m.rfind("h2o", 0) == 0) {
      EXPECT_EQ(q.rec.h2o_from_engine_rows, m.find("official") == std::string::npos);
    }
    if (m.find("decode-evict=1") != std::string::npos) EXPECT_GT(q.rec.decode_evicted, 0);
    EXPECT_TRUE(q.rec.query_head);
    EXPECT_FALSE(t.rec.query_head);
    ASSERT_EQ(q.lists, c.n_head);
    ASSERT_EQ(t.lists, c.n_head);
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head; ++h) EXPECT_EQ(q.pos[l][h], t.pos[l][h]) << "layer " << l << " query head " << h;
    EXPECT_EQ(q.tokens, t.tokens);
    for (size_t i = 0; i < q.logits.size(); ++i) expect_logits_near(q.logits[i], t.logits[i], "step " + std::to_string(i));
    EXPECT_EQ(q.rec.bytes_held_after, t.rec.bytes_held_after);
  }
  // A cache stored as q8_0 / f16 (FormatKvCache) repeats its stored rows the same way.
  // So does the reference backend (its own kv_append and group-1 attention over the copies).
  EngineOptions q8 = small_engine(), ref = small_engine();
  q8.cache = KvCacheType{KvType::q8_0, KvType::f16, KvRotation::off};
  ref.backend = "reference";
  for (const EngineOptions& eo : {q8, ref}) {
    SCOPED_TRACE(eo.backend + " " + kv_type_name(eo.cache.k));
    const CompressedRun q = compress_and_decode(gqa, "snapkv:window=8:granularity=query-head", 24, prompt, 4, eo);
    const CompressedRun t = compress_and_decode(twin, "snapkv:window=8", 24, prompt, 4, eo);
    ASSERT_EQ(q.lists, c.n_head);
    EXPECT_EQ(q.pos, t.pos);
    EXPECT_EQ(q.tokens, t.tokens);
    for (size_t i = 0; i < q.logits.size(); ++i) expect_logits_near(q.logits[i], t.logits[i], "step " + std::to_string(i));
    EXPECT_EQ(q.rec.bytes_held_after, t.rec.bytes_held_after);
  }
}

// The official harness's per-query-head selection, computed by numpy from the same tiny model and
// prompt (tests/kv_reference.py → tests/data/kv/vectors.json, case "query_head"), against the engine
// compressing that prompt with granularity=query-head: every (layer, query head) keeps exactly the
// reference's positions, with the reference's scores, and holds H/H_kv times the kv-head run's bytes.
TEST(KvQueryHead, MatchesTheNumpyHarnessReferenceOnATinyModel) {
  std::ifstream f(test::source_dir() + "/tests/data/kv/vectors.json");
  ASSERT_TRUE(f) << "tests/data/kv/vectors.json not found";
  const nlohmann::json ref = nlohmann::json::parse(f)["cases"]["query_head"];
  const std::string gguf = test::binary_dir() + "/tiny/" + ref["model"].get<std::string>() + ".gguf";
  if (!std::ifstream(gguf))
    GTEST_SKIP() << gguf << " not found: the ctest fixture make_tiny_models writes it (needs .cache/venv from scripts/install_deps.sh)";
  const auto model = Model::load(gguf);
  const ModelConfig& c = model->config();
  const int N = ref["N"], W = ref["W"], C = ref["C"], H = ref["H"], H_kv = ref["H_kv"], L = ref["n_layer"];
  ASSERT_EQ(c.n_layer, L);
  ASSERT_EQ(c.n_head, H);
  ASSERT_EQ(c.n_head_kv, H_kv);
  ASSERT_GT(H / H_kv, 1);
  const std::vector<int32_t> prompt = ref["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(static_cast<int>(prompt.size()), N);
  // The reference chose a prompt whose every cut is decided by at least 1e-3 of the layer's largest
  // score (tests/kv_reference.py: cut_margin), ten times the score tolerance below: a keep-set that
  // differs is then a wrong selection, not float noise.
  ASSERT_GE(ref["min_relative_margin"].get<double>(), 1e-3);
  Engine engine(model, small_engine());  // f32 cache: the scorers read the keys the forward computed
  ASSERT_EQ(engine.cache_format().k, KvType::f32);
  double worst = 0.0;
  for (const nlohmann::json& m : ref["methods"]) {
    const std::string spec = m["spec"].get<std::string>() + ":window=" + std::to_string(W);
    SCOPED_TRACE(spec);
    size_t after[2] = {0, 0};
    for (int qh = 1; qh >= 0; --qh) {
      kv::KvCompressor comp(*model, kv::make_spec_options(spec + (qh ? ":granularity=query-head" : ""), C, std::nullopt));
      auto seq = engine.new_sequence();
      seq->set_policy(&comp);
      if (Observer* o = comp.observer()) {  // h2o: from the engine's attention rows, as run / compress do
        seq->set_observer(o);
        comp.expect_prompt(N);
      }
      engine.eval(*seq, prompt);
      const kv::CompressionRecord& rec = comp.record();
      ASSERT_TRUE(rec.compressed) << rec.skipped_reason;
      after[qh] = rec.bytes_held_after;
      if (!qh) continue;  // the kv-head run only gives the bytes to compare with
      EXPECT_TRUE(rec.query_head);
      ASSERT_EQ(seq->cache().n_head_kv(), H);
      EXPECT_EQ(rec.bytes_held_after, seq->cache().bytes_held());
      size_t want_bytes = 0;
      for (int l = 0; l < L; ++l) {
        const nlohmann::json& lr = m["layers"][l];
        const int b = lr["prefix_budget"];
        want_bytes += static_cast<size_t>(H) * (b + W) * seq->cache().row_bytes();
        for (int h = 0; h < H; ++h) {
          const std::vector<int> want = lr["keep"][h].get<std::vector<int>>();
          const std::vector<double> scores = lr["scores"][h].get<std::vector<double>>();
          ASSERT_EQ(static_cast<int>(scores.size()), N - W);
          const std::vector<int>& pos = comp.positions(l, h);
          std::vector<int> got = pos;
          std::sort(got.begin(), got.end());
          EXPECT_EQ(got, want) << "layer " << l << " query head " << h;
          EXPECT_EQ(seq->cache().length(l, h), b + W);
          // Scores: fp32 forward and attention against fp64, from F32 weights: they agree to ~1e-6 of
          // the layer's largest score (1.4e-6 measured). 1e-4 of it leaves room for other CPU kernels'
          // summation orders, stays ten times below the cut margins, and fails a wrong score
          // (another row, query head, pooling or mask: errors of 1e-2 to 1 of it).
          const double scale = *std::max_element(scores.begin(), scores.end());
          const std::span<const float> kept = comp.kept_scores(l, h);
          ASSERT_EQ(static_cast<int>(kept.size()), b);
          for (int j = 0; j < b; ++j) {
            ASSERT_LT(pos[j], N - W);
            const double err = std::fabs(kept[j] - scores[pos[j]]) / scale;
            worst = std::max(worst, err);
            EXPECT_LT(err, 1e-4) << "layer " << l << " query head " << h << " position " << pos[j] << ": " << kept[j]
                                 << " vs " << scores[pos[j]];
          }
        }
      }
      // Bytes: what the reference's budgets cost in H lists per layer (K + V rows, f32).
      EXPECT_EQ(rec.bytes_held_after, want_bytes);
    }
    // Equal budget: one list per query head holds H/H_kv times the memory of one per KV head.
    EXPECT_EQ(after[1], static_cast<size_t>(H / H_kv) * after[0]);
  }
  std::printf("qwen2_tiny vs numpy harness: worst kept-score error %.2e of the layer's largest score\n", worst);
}

// The queries and keys of every layer of one prefill (post-RoPE), as the engine computes them.
class QkDump : public Observer {
 public:
  void on_qk(const LayerQk& qk) override {
    if (static_cast<int>(q.size()) <= qk.layer) q.resize(qk.layer + 1), k.resize(qk.layer + 1);
    q[qk.layer].insert(q[qk.layer].end(), qk.q_post, qk.q_post + static_cast<size_t>(qk.n_tokens) * qk.n_head * qk.head_dim);
    k[qk.layer].insert(k[qk.layer].end(), qk.k_post, qk.k_post + static_cast<size_t>(qk.n_tokens) * qk.n_head_kv * qk.head_dim);
  }
  std::vector<std::vector<float>> q, k;  // [layer][token][head][dim]
};

// SnapKV without pooling, per query head, straight from the engine's q and k: each window row's softmax
// over the keys it sees (causal), summed over the window; the b prefix rows of largest sum are kept.
TEST(KvQueryHead, KeepSetsEqualADirectRecomputationPerQueryHead) {
  const auto model = Model::random("llama-tiny", 5, true);
  const ModelConfig& c = model->config();
  Engine engine(model, small_engine());
  const int N = 64, W = 8, C = 24, b = C - W, P = N - W, G = c.n_head / c.n_head_kv, D = c.head_dim;
  const std::vector<int32_t> prompt = test_prompt(N, c.n_vocab);
  kv::KvCompressor comp(*model, kv::make_spec_options("snapkv:pool=none:window=8:granularity=query-head", C, std::nullopt));
  auto seq = engine.new_sequence();
  QkDump dump;
  seq->set_policy(&comp);
  seq->set_observer(&dump);
  engine.eval(*seq, prompt);
  ASSERT_EQ(seq->cache().n_head_kv(), c.n_head);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  int checked = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    ASSERT_EQ(dump.q[l].size(), static_cast<size_t>(N) * c.n_head * D);
    for (int h = 0; h < c.n_head; ++h) {
      const int kvh = h / G;
      std::vector<double> score(P, 0.0), p(N);
      for (int a = N - W; a < N; ++a) {
        const float* qa = dump.q[l].data() + (static_cast<size_t>(a) * c.n_head + h) * D;
        double mx = -1e300, sum = 0.0;
        for (int j = 0; j <= a; ++j) {
          const float* kj = dump.k[l].data() + (static_cast<size_t>(j) * c.n_head_kv + kvh) * D;
          double dot = 0.0;
          for (int d = 0; d < D; ++d) dot += static_cast<double>(qa[d]) * kj[d];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j <= a; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int j = 0; j < P; ++j) score[j] += p[j] / sum;
      }
      std::vector<int> order(P);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return score[x] > score[y]; });
      // A near-tie at the cut could go either way in float: such a head says nothing.
      if (score[order[b - 1]] - score[order[b]] < 1e-6) continue;
      std::vector<int> want(order.begin(), order.begin() + b);
      for (int w = 0; w < W; ++w) want.push_back(P + w);
      std::sort(want.begin(), want.end());
      std::vector<int> got = comp.positions(l, h);
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, want) << "layer " << l << " query head " << h;
      ++checked;
    }
  }
  EXPECT_GE(checked, c.n_layer * c.n_head - 2);
  // The heads of one group really keep different sets (else the test would not tell the granularities apart).
  int differ = 0;
  for (int l = 0; l < c.n_layer; ++l)
    for (int h = 1; h < c.n_head; ++h)
      if (h % G != 0 && comp.positions(l, h) != comp.positions(l, h - 1)) ++differ;
  EXPECT_GT(differ, 0);
}

// At equal budget, one list per query head holds H/H_kv times the memory of one per KV head, and the
// record and the cache both say so (eval-kv's kv_bytes is the cache's bytes_used()).
TEST(KvQueryHead, BytesAreTheGroupSizeTimesTheKvHeadFigure) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = Model::load(test::default_model());
  const ModelConfig& c = model->config();
  const int G = c.n_head / c.n_head_kv;
  Engine engine(model, small_engine(512));
  const std::vector<int32_t> prompt = test_prompt(200, c.n_vocab);
  size_t held[2] = {0, 0}, used[2] = {0, 0}, after[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    const std::string spec = std::string("snapkv:window=8") + (i ? ":granularity=query-head" : "");
    kv::KvCompressor comp(*model, kv::make_spec_options(spec, 64, std::nullopt));
    auto seq = engine.new_sequence();
    seq->set_policy(&comp);
    engine.eval(*seq, prompt);
    ASSERT_TRUE(comp.record().compressed);
    held[i] = seq->cache().bytes_held();
    used[i] = seq->cache().bytes_used();
    after[i] = comp.record().bytes_held_after;
    EXPECT_EQ(seq->cache().n_head_kv(), i ? c.n_head : c.n_head_kv);
    EXPECT_EQ(comp.record().bytes_held_before, static_cast<size_t>(c.n_layer) * c.n_head_kv * 200 * seq->cache().row_bytes());
  }
  std::printf("SmolLM2 snapkv C=64 N=200: kv-head %zu bytes held (%zu used), query-head %zu (%zu used): x%.3f\n", held[0],
              used[0], held[1], used[1], static_cast<double>(held[1]) / held[0]);
  EXPECT_EQ(used[0], static_cast<size_t>(c.n_layer) * c.n_head_kv * 64 * 2 * c.head_dim * sizeof(float));
  EXPECT_EQ(held[1], G * held[0]);
  EXPECT_EQ(used[1], G * used[0]);
  EXPECT_EQ(after[1], G * after[0]);
}

// A query-head sequence decoded beside others (a kv-head one and an uncompressed one) gives the same
// greedy tokens and logits as alone: its attention call is separate, each row depends on its lists only.
TEST(KvQueryHead, BatchedDecodingEqualsAlone) {
  const auto model = Model::random("llama-tiny", 7, true);
  const ModelConfig& c = model->config();
  Engine engine(model, small_engine());
  const std::vector<std::string> specs = {"snapkv:window=8:granularity=query-head", "tappa:window=8", "fullkv"};
  const int steps = 6;
  const auto prompt_of = [&](size_t i) { return test_prompt(48 + 8 * static_cast<int>(i), c.n_vocab - static_cast<int>(i)); };
  std::vector<std::vector<int32_t>> alone(specs.size());
  std::vector<std::vector<std::vector<float>>> alone_logits(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    kv::KvCompressor comp(*model, kv::make_spec_options(specs[i], 24, std::nullopt));
    auto seq = engine.new_sequence();
    if (comp.active()) seq->set_policy(&comp);
    std::span<const float> lg = engine.eval(*seq, prompt_of(i));
    for (int t = 0; t < steps; ++t) {
      const int32_t one[1] = {argmax(lg)};
      alone[i].push_back(one[0]);
      lg = engine.eval(*seq, one);
      alone_logits[i].emplace_back(lg.begin(), lg.end());
    }
  }
  std::vector<std::unique_ptr<kv::KvCompressor>> comps;
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<int32_t> next(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    comps.push_back(std::make_unique<kv::KvCompressor>(*model, kv::make_spec_options(specs[i], 24, std::nullopt)));
    seqs.push_back(engine.new_sequence());
    if (comps[i]->active()) seqs[i]->set_policy(comps[i].get());
    next[i] = argmax(engine.eval(*seqs[i], prompt_of(i)));
  }
  ASSERT_EQ(seqs[0]->cache().n_head_kv(), c.n_head);
  ASSERT_EQ(seqs[1]->cache().n_head_kv(), c.n_head_kv);
  for (int t = 0; t < steps; ++t) {
    std::vector<Engine::Step> batch;
    for (size_t i = 0; i < specs.size(); ++i) batch.push_back({seqs[i].get(), std::span<const int32_t>(&next[i], 1)});
    engine.decode(batch);
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(next[i], alone[i][t]) << specs[i] << " step " << t;
      const std::span<const float> lg = seqs[i]->logits();
      EXPECT_TRUE(std::equal(lg.begin(), lg.end(), alone_logits[i][t].begin(), alone_logits[i][t].end()))
          << specs[i] << " step " << t;
      next[i] = argmax(lg);
    }
  }
}

// eval-kv's path (one prefill, restored and compressed per cell by driving the hooks by hand) gives the
// same per-query-head cache as compressing during the prefill; a saved query-head sequence restores
// into a fresh sequence (its lists repeated) and decodes on identically.
TEST(KvQueryHead, RestoredPrefillAndSavedStateMatchTheLiveRun) {
  const auto model = Model::random("llama-tiny", 13, true);
  const ModelConfig& c = model->config();
  Engine engine(model, small_engine());
  const std::vector<int32_t> prompt = test_prompt(64, c.n_vocab);
  const std::string spec = "snapkv:pool=max7:window=8:granularity=query-head";
  const auto greedy = [&](Sequence& seq, std::span<const float> lg, int n) {
    std::vector<int32_t> out;
    for (int t = 0; t < n; ++t) {
      const int32_t one[1] = {argmax(lg)};
      out.push_back(one[0]);
      lg = engine.eval(seq, one);
    }
    return out;
  };
  kv::KvCompressor live(*model, kv::make_spec_options(spec, 24, std::nullopt));
  auto seq = engine.new_sequence();
  seq->set_policy(&live);
  const std::vector<float> first = [&] {
    const std::span<const float> lg = engine.eval(*seq, prompt);
    return std::vector<float>(lg.begin(), lg.end());
  }();
  ASSERT_EQ(seq->cache().n_head_kv(), c.n_head);
  const std::vector<uint8_t> state = seq->save();
  const std::vector<int32_t> want = greedy(*seq, first, 5);

  kv::KvCompressor cell(*model, kv::make_spec_options(spec, 24, std::nullopt));
  const evalkv::Prefilled pre = evalkv::prefill_capture(engine, prompt, cell.prefill_query_rows());
  auto restored = evalkv::restore_prefill(engine, pre, &cell);
  ASSERT_EQ(restored->cache().n_head_kv(), c.n_head);
  for (int l = 0; l < c.n_layer; ++l)
    for (int h = 0; h < c.n_head; ++h) {
      EXPECT_EQ(cell.positions(l, h), live.positions(l, h)) << "layer " << l << " query head " << h;
      EXPECT_EQ(restored->cache().length(l, h), static_cast<int>(live.positions(l, h).size()));
    }
  restored->set_policy(&cell);
  EXPECT_EQ(greedy(*restored, pre.last_logits, 5), want);
  EXPECT_EQ(cell.record().bytes_held_after, live.record().bytes_held_after);

  auto loaded = engine.new_sequence();
  loaded->restore(state);
  ASSERT_EQ(loaded->cache().n_head_kv(), c.n_head);
  EXPECT_EQ(loaded->cache().bytes_used(), live.record().bytes_held_after);
  EXPECT_EQ(greedy(*loaded, first, 5), want);
}

// Where the storage cannot hold per-query-head lists the method says so in one line, and a sequence
// compressed per query head refuses a later kv-head compression instead of mislabelling it.
TEST(KvQueryHead, ClearErrors) {
  const auto model = Model::random("llama-tiny", 3, true);
  Engine engine(model, small_engine());
  const std::vector<int32_t> prompt = test_prompt(64, model->config().n_vocab);
  kv::KvCompressor qh(*model, kv::make_spec_options("snapkv:window=8:granularity=query-head", 24, std::nullopt));
  auto seq = engine.new_sequence();
  seq->set_policy(&qh);
  engine.eval(*seq, prompt);
  seq->reset();
  kv::KvCompressor kvh(*model, kv::make_spec_options("snapkv:window=8", 24, std::nullopt));
  seq->set_policy(&kvh);
  try {
    engine.eval(*seq, prompt);
    ADD_FAILURE() << "kv-head compression of a query-head cache was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("query head"), std::string::npos) << e.what();
  }
}

// The CUDA cache keeps one device list per KV head: query-head granularity there is one line, not a
// crash or a silent per-KV-head run; kv-head compression on the same engine still works.
TEST(KvQueryHead, CudaSaysSoInOneLine) {
  const auto model = Model::random("llama-tiny", 3, true);
  EngineOptions eo = small_engine();
  eo.backend = "cuda";
  std::unique_ptr<Engine> engine;
  try {
    engine = std::make_unique<Engine>(model, eo);
  } catch (const Error& e) {
    GTEST_SKIP() << "CUDA backend not available: " << e.what();
  }
  const std::vector<int32_t> prompt = test_prompt(64, model->config().n_vocab);
  kv::KvCompressor qh(*model, kv::make_spec_options("snapkv:window=8:granularity=query-head", 24, std::nullopt));
  auto seq = engine->new_sequence();
  seq->set_policy(&qh);
  try {
    engine->eval(*seq, prompt);
    ADD_FAILURE() << "query-head granularity ran on the CUDA cache";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_NE(what.find("granularity=query-head"), std::string::npos) << what;
    std::printf("cuda: %s\n", what.c_str());
  }
  kv::KvCompressor kvh(*model, kv::make_spec_options("snapkv:window=8", 24, std::nullopt));
  auto fresh = engine->new_sequence();
  fresh->set_policy(&kvh);
  EXPECT_NO_THROW(engine->eval(*fresh, prompt));
  EXPECT_TRUE(kvh.record().compressed);
}

}  // namespace
}  // namespace tappa
