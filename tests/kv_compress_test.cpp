// KV-cache compression inside the engine (src/kv/compressor.h) on the default model: budgets that
// cover the prompt change nothing; top-k keeps exactly the highest-scored rows (checked against a
// naive recomputation from an uncompressed run's queries and keys) and those rows are the full
// cache's rows bit for bit; decoding after eviction uses the original positions; memory really
// falls; TAPPA gives more budget to less self-similar layers; decode eviction bounds every list.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kv/compressor.h"
#include "kv/host_kv_cache.h"
#include "one_sequence.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "test_util.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;

constexpr int kPrompt = 256;  // prompt tokens
constexpr int kW = 32;        // window
constexpr int kThreads = 2;
constexpr int kDecode = 4;    // decode steps compared

using tappa::test::slurp;

// Captures the last kW post-RoPE query rows of every layer.
struct QCapture : Observer {
  int n_prompt = 0;
  std::vector<std::vector<float>> q;  // per layer [kW][H*d]
  void on_qk(const LayerQk& qk) override {
    if (q.empty()) q.resize(64);
    auto& dst = q[qk.layer];
    const int QD = qk.n_head * qk.head_dim;
    if (dst.empty()) dst.assign(static_cast<size_t>(kW) * QD, 0.0f);
    for (int i = 0; i < qk.n_tokens; ++i) {
      const int64_t pos = qk.pos0 + i;
      if (pos >= n_prompt - kW && pos < n_prompt)
        std::memcpy(dst.data() + (pos - (n_prompt - kW)) * QD, qk.q_post + static_cast<size_t>(i) * QD, sizeof(float) * QD);
    }
  }
};

struct Logits {
  std::vector<std::vector<float>> logits;  // prompt's last logits, then one per decode step
};

class KvCompress : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::exists(test::default_model())) return;
    model_ = Model::load(test::default_model());
    const std::string text = slurp(test::source_dir() + "/tests/data/prompts/prose_lighthouse.txt") +
                             slurp(test::source_dir() + "/tests/data/prompts/code_python_csv.txt");
    std::vector<int32_t> all = model_->tokenizer().encode(text, true, false);
    if (static_cast<int>(all.size()) < kPrompt + kDecode) {
      model_.reset();
      model_ = nullptr;
      return;
    }
    prompt_ = new std::vector<int32_t>(all.begin(), all.begin() + kPrompt);
    decode_ = new std::vector<int32_t>(all.begin() + kPrompt, all.begin() + kPrompt + kDecode);
    // The uncompressed reference: logits, the full cache and the window queries.
    test::OneSequence e(*model_, opts());
    QCapture cap;
    cap.n_prompt = kPrompt;
    e.set_observer(&cap);
    full_ = new Logits(run(e));
    const ModelConfig& c = model_->config();
    full_k_ = new std::vector<std::vector<float>>();
    full_v_ = new std::vector<std::vector<float>>();
    // Cache after the decode steps too; the prompt rows are the first kPrompt rows.
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) {
        const size_t n = static_cast<size_t>(kPrompt) * c.head_dim;
        full_k_->emplace_back(e.kv_cache().keys(l, h), e.kv_cache().keys(l, h) + n);
        full_v_->emplace_back(e.kv_cache().values(l, h), e.kv_cache().values(l, h) + n);
      }
    q_ = new std::vector<std::vector<float>>(cap.q);
  }
  static void TearDownTestSuite() {
    model_.reset();
    delete prompt_;
    delete decode_;
    delete full_;
    delete full_k_;
    delete full_v_;
    delete q_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "default model missing (run scripts/fetch_model.sh) or test text too short";
  }

  static EngineOptions opts() {
    EngineOptions o;
    o.n_threads = kThreads;
    o.n_ctx = kPrompt + 64;
    return o;
  }
  // Prompt, then the fixed decode tokens; logits after each call.
  static Logits run(test::OneSequence& e, int n_decode = kDecode) {
    Logits r;
    auto lg = e.eval(*prompt_);
    r.logits.emplace_back(lg.begin(), lg.end());
    for (int i = 0; i < n_decode; ++i) {
      const int32_t t[1] = {(*decode_)[i % kDecode]};
      lg = e.eval(t);
      r.logits.emplace_back(lg.begin(), lg.end());
    }
    return r;
  }
  static kv::CompressorOptions method(const std::string& name, std::optional<int> budget,
                                      std::optional<double> ratio = std::nullopt) {
    kv::CompressorFlags f;
    f.method = name;
    f.budget = budget;
    f.ratio = ratio;
    if (name != "fullkv" && !budget && !ratio) f.budget = 1 << 20;
    return kv::make_compressor_options(f);
  }
  static double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
  }
  static const std::vector<float>& fk(int l, int h) { return (*full_k_)[l * model_->config().n_head_kv + h]; }
  static const std::vector<float>& fv(int l, int h) { return (*full_v_)[l * model_->config().n_head_kv + h]; }

  // Window attention of query head h of layer l from the captured queries and the full keys:
  // [kW][kPrompt] doubles, causal (window row a sits at position kPrompt − kW + a).
  static std::vector<double> window_probs(int l, int h) {
    const ModelConfig& c = model_->config();
    const int d = c.head_dim, QD = c.n_head * d, kvh = h / c.n_group();
    std::vector<double> A(static_cast<size_t>(kW) * kPrompt, 0.0);
    for (int a = 0; a < kW; ++a) {
      const float* q = (*q_)[l].data() + static_cast<size_t>(a) * QD + h * d;
      const int last = kPrompt - kW + a;
      double mx = -1e300;
      std::vector<double> s(last + 1);
      for (int j = 0; j <= last; ++j) {
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += static_cast<double>(q[i]) * fk(l, kvh)[static_cast<size_t>(j) * d + i];
        s[j] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (int j = 0; j <= last; ++j) z += (s[j] = std::exp(s[j] - mx));
      for (int j = 0; j <= last; ++j) A[static_cast<size_t>(a) * kPrompt + j] = s[j] / z;
    }
    return A;
  }
  // avg-pool k=5, zero padding counted (torch count_include_pad).
  static std::vector<double> avgpool5(const std::vector<double>& x) {
    const int n = static_cast<int>(x.size());
    std::vector<double> y(n, 0.0);
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int t = j - 2; t <= j + 2; ++t)
        if (t >= 0 && t < n) s += x[t];
      y[j] = s / 5.0;
    }
    return y;
  }
  // Naive SnapKV (sum over window rows) or CAKE (mean + 200·var) scores of KV head kv: [P].
  static std::vector<double> naive_scores(int l, int kv, bool cake) {
    const ModelConfig& c = model_->config();
    const int P = kPrompt - kW, G = c.n_group();
    std::vector<double> out(P, 0.0);
    for (int g = 0; g < G; ++g) {
      const std::vector<double> A = window_probs(l, kv * G + g);
      std::vector<double> s(P, 0.0);
      for (int j = 0; j < P; ++j) {
        double sum = 0, sq = 0;
        for (int a = 0; a < kW; ++a) sum += A[static_cast<size_t>(a) * kPrompt + j];
        if (!cake) {
          s[j] = sum;
          continue;
        }
        const double mean = sum / kW;
        for (int a = 0; a < kW; ++a) {
          const double dlt = A[static_cast<size_t>(a) * kPrompt + j] - mean;
          sq += dlt * dlt;
        }
        s[j] = mean + 200.0 * sq / (kW - 1);
      }
      const std::vector<double> p = avgpool5(s);
      for (int j = 0; j < P; ++j) out[j] += p[j] / G;
    }
    return out;
  }
  // The kept prefix positions must be the |kept| highest-scored ones; near-ties (within tol of the
  // cut) may go either way (the library scores in fp32).
  static void expect_top_k(const std::vector<double>& s, const std::vector<int>& kept_prefix, const std::string& what) {
    const int b = static_cast<int>(kept_prefix.size());
    std::vector<int> order(s.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return s[a] > s[c]; });
    if (b == 0) return;
    const double cut = s[order[b - 1]];
    const double tol = 1e-5 * std::max(1e-30, std::fabs(s[order[0]]));
    std::set<int> expect(order.begin(), order.begin() + b), got(kept_prefix.begin(), kept_prefix.end());
    int mismatches = 0;
    for (int j : got)
      if (!expect.count(j)) {
        ++mismatches;
        EXPECT_NEAR(s[j], cut, tol) << what << ": kept position " << j << " is not among the top " << b;
      }
    for (int j : expect)
      if (!got.count(j)) {
        EXPECT_NEAR(s[j], cut, tol) << what << ": position " << j << " should have been kept";
      }
    EXPECT_LE(mismatches, 2) << what;
  }

  static std::shared_ptr<Model> model_;
  static std::vector<int32_t>* prompt_;
  static std::vector<int32_t>* decode_;
  static Logits* full_;
  static std::vector<std::vector<float>>* full_k_;
  static std::vector<std::vector<float>>* full_v_;
  static std::vector<std::vector<float>>* q_;
};
std::shared_ptr<Model> KvCompress::model_;
std::vector<int32_t>* KvCompress::prompt_ = nullptr;
std::vector<int32_t>* KvCompress::decode_ = nullptr;
Logits* KvCompress::full_ = nullptr;
std::vector<std::vector<float>>* KvCompress::full_k_ = nullptr;
std::vector<std::vector<float>>* KvCompress::full_v_ = nullptr;
std::vector<std::vector<float>>* KvCompress::q_ = nullptr;

// (1) A budget that covers the prompt evicts nothing: logits bit-identical, prompt and decode.
TEST_F(KvCompress, BudgetCoveringPromptGivesIdenticalLogits) {
  for (const kv::Method& m : kv::all_methods()) {
    const std::string name(m.name);
    // Budget = N exactly: the prompt fits. Methods with decode eviction (CAKE's rule: keep C per layer)
    // start evicting once decoding grows the cache past C, so they get N + kDecode to cover the steps.
    std::vector<int> budgets = {kPrompt};
    if (m.defaults.decode_eviction) budgets.push_back(kPrompt + kDecode);
    if (name == "tappa") budgets.push_back(100000);
    for (int budget : budgets) {
      kv::KvCompressor comp(*model_, method(name, budget));
      test::OneSequence e(*model_, opts());
      e.set_kv_policy(&comp);
      const Logits r = run(e);
      const bool decode_covered = !comp.method_options().decode_eviction || budget >= kPrompt + kDecode;
      const size_t steps = decode_covered ? r.logits.size() : 1;
      for (size_t i = 0; i < steps; ++i)
        EXPECT_EQ(std::memcmp(r.logits[i].data(), full_->logits[i].data(), sizeof(float) * r.logits[i].size()), 0)
            << name << " budget " << budget << " step " << i << " max diff "
            << max_abs_diff(r.logits[i], full_->logits[i]);
      EXPECT_FALSE(comp.record().compressed) << name;
      if (name != "fullkv") {
        EXPECT_EQ(comp.record().n_prompt, kPrompt);
      }
    }
  }
  // kvpress unit: ratio 0 keeps every token.
  kv::KvCompressor comp(*model_, method("snapkv", std::nullopt, 0.0));
  test::OneSequence e(*model_, opts());
  e.set_kv_policy(&comp);
  const Logits r = run(e);
  for (size_t i = 0; i < r.logits.size(); ++i) EXPECT_EQ(r.logits[i], full_->logits[i]) << "ratio 0, step " << i;
}

// (2) Top-k keeps exactly the highest-scored rows (+ the last W) per KV head, and they are the full
// cache's rows bit for bit. Every method: rows and window; snapkv / tappa / tappa-head: the scores.
TEST_F(KvCompress, TopKKeepsHighestScoredRowsBitForBit) {
  const ModelConfig& c = model_->config();
  const int C = 96, P = kPrompt - kW;
  for (const kv::Method& m : kv::all_methods()) {
    if (m.is_none()) continue;
    const std::string name(m.name);
    kv::KvCompressor comp(*model_, method(name, C));
    test::OneSequence e(*model_, opts());
    e.set_kv_policy(&comp);
    auto lg = e.eval(*prompt_);
    // The prompt's own logits do not depend on the eviction (each layer attended over the whole
    // prompt before it was cut).
    EXPECT_EQ(std::vector<float>(lg.begin(), lg.end()), full_->logits[0]) << name;
    ASSERT_TRUE(comp.record().compressed) << name;
    int64_t total_prefix = 0;
    for (int l = 0; l < c.n_layer; ++l) {
      const kv::LayerRecord& lr = comp.record().layers[l];
      for (int h = 0; h < c.n_head_kv; ++h) {
        const std::vector<int>& pos = comp.positions(l, h);
        const int n = e.kv_cache().length(l, h);
        ASSERT_EQ(static_cast<int>(pos.size()), n) << name << " l" << l << " h" << h;
        ASSERT_GE(n, kW);
        EXPECT_EQ(n, lr.heads[h].kept);
        EXPECT_LE(n, lr.heads[h].budget) << name << " l" << l << " h" << h;
        EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
        for (int w = 0; w < kW; ++w) EXPECT_EQ(pos[n - kW + w], P + w) << name << ": the window is always kept";
        total_prefix += n - kW;
        for (int r = 0; r < n; ++r) {
          ASSERT_EQ(std::memcmp(e.kv_cache().keys(l, h) + static_cast<size_t>(r) * c.head_dim,
                                fk(l, h).data() + static_cast<size_t>(pos[r]) * c.head_dim, sizeof(float) * c.head_dim),
                    0)
              << name << " key row " << r << " (position " << pos[r] << ") of l" << l << " h" << h;
          ASSERT_EQ(std::memcmp(e.kv_cache().values(l, h) + static_cast<size_t>(r) * c.head_dim,
                                fv(l, h).data() + static_cast<size_t>(pos[r]) * c.head_dim, sizeof(float) * c.head_dim),
                    0)
              << name << " value row " << r;
        }
        if (name == "snapkv" || name == "tappa" || name == "tappa-head") {
          const std::vector<int> kept_prefix(pos.begin(), pos.end() - kW);
          if (name == "snapkv") {
            EXPECT_EQ(n, C) << "uniform budget";
          }
          expect_top_k(naive_scores(l, h, name != "snapkv"), kept_prefix, name + " l" + std::to_string(l) + " h" +
                                                                               std::to_string(h));
        }
        if (name == "streamingllm") {
          // 4 sinks + the most recent prefix tokens.
          for (int s = 0; s < 4; ++s) EXPECT_EQ(pos[s], s);
          EXPECT_EQ(pos[n - kW - 1], P - 1);
        }
      }
    }
    // Budget totals: uniform and preference allocators keep (C − W) prefix tokens per layer on average
    // (cascading: a layer whose share was raised by rounding keeps what it had, so at most a few less).
    const int64_t budget_total = static_cast<int64_t>(C - kW) * c.n_layer * c.n_head_kv;
    if (m.allocator->name() == "uniform") {
      EXPECT_EQ(total_prefix, budget_total) << name;
    }
    if (comp.method_options().cascading) {
      EXPECT_LE(total_prefix, budget_total) << name;
      EXPECT_GE(total_prefix, budget_total - c.n_layer * c.n_head_kv) << name;
    }
  }
}

// (3) Positions: evict, then decode. A reference engine whose cache is the full cache cut to the same
// rows (original positions) decodes identically; re-rotating the kept keys to compacted positions
// (what an engine that re-indexes positions would do) changes the logits.
TEST_F(KvCompress, DecodeAfterEvictionKeepsOriginalPositions) {
  const ModelConfig& c = model_->config();
  for (const std::string name : {"snapkv", "tappa"}) {
    kv::CompressorFlags f;
    f.method = name;
    f.budget = 96;
    f.decode_evict = false;
    kv::KvCompressor comp(*model_, kv::make_compressor_options(f));
    test::OneSequence a(*model_, opts());
    a.set_kv_policy(&comp);
    const Logits ra = run(a, 0);

    test::OneSequence b(*model_, opts()), r(*model_, opts());
    b.eval(*prompt_);
    r.eval(*prompt_);
    const std::vector<float>& inv_freq = model_->rope_inv_freq();
    const bool neox = c.rope_layout == RopeLayout::Neox;
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) {
        const std::vector<int>& pos = comp.positions(l, h);
        b.kv_cache().keep_rows(l, h, pos);
        r.kv_cache().keep_rows(l, h, pos);
        // Re-rotate key i from position pos[i] to the compacted position kPrompt − k + i (query at
        // kPrompt sees distances k − i, as if the kept tokens had been renumbered 0 … k−1).
        const int k = static_cast<int>(pos.size());
        for (int i = 0; i < k; ++i) {
          float* key = static_cast<HostKvCache&>(r.kv_cache()).mutable_keys(l, h) + static_cast<size_t>(i) * c.head_dim;
          const double delta = static_cast<double>(kPrompt - k + i) - pos[i];
          for (int m = 0; m < c.n_rot / 2; ++m) {
            const int i0 = neox ? m : 2 * m, i1 = neox ? m + c.n_rot / 2 : 2 * m + 1;
            const double th = delta * inv_freq[m], cs = std::cos(th), sn = std::sin(th);
            const double x0 = key[i0], x1 = key[i1];
            key[i0] = static_cast<float>(x0 * cs - x1 * sn);
            key[i1] = static_cast<float>(x0 * sn + x1 * cs);
          }
        }
      }
    double max_wrong = 0;
    for (int i = 0; i < kDecode; ++i) {
      const int32_t t[1] = {(*decode_)[i]};
      auto la = a.eval(t);
      const std::vector<float> va(la.begin(), la.end());
      auto lb = b.eval(t);
      EXPECT_EQ(va, std::vector<float>(lb.begin(), lb.end())) << name << ": decode step " << i;
      auto lr = r.eval(t);
      max_wrong = std::max(max_wrong, max_abs_diff(va, std::vector<float>(lr.begin(), lr.end())));
      // And it is not the uncompressed run either (something was evicted).
      if (i == 0) {
        EXPECT_GT(max_abs_diff(va, full_->logits[1]), 1e-4) << name;
      }
    }
    EXPECT_GT(max_wrong, 0.05) << name << ": compacted positions should change the logits";
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) EXPECT_EQ(a.kv_cache().length(l, h), b.kv_cache().length(l, h));
  }
}

// (4) Memory is really given back: bytes_held falls by C/N (uniform and preference allocators
// preserve the total; PyramidKV by its own schedule).
TEST_F(KvCompress, BytesHeldFallByTheExpectedFactor) {
  const ModelConfig& c = model_->config();
  const size_t row = static_cast<size_t>(c.head_dim) * 2 * sizeof(float);
  const size_t lists = static_cast<size_t>(c.n_layer) * c.n_head_kv;
  for (const std::string name : {"snapkv", "tappa", "tappa-head", "pyramidkv", "h2o"}) {
    for (int C : {64, 128}) {
      if (C == 128 && name != "snapkv") continue;
      kv::KvCompressor comp(*model_, method(name, C));
      test::OneSequence e(*model_, opts());
      e.set_kv_policy(&comp);
      e.eval(*prompt_);
      const kv::CompressionRecord& r = comp.record();
      EXPECT_EQ(r.bytes_held_before, lists * kPrompt * row) << name;
      EXPECT_EQ(e.kv_cache().bytes_held(), r.bytes_held_after);
      EXPECT_EQ(r.bytes_held_after, r.bytes_expected) << name << " C=" << C;
      if (name != "pyramidkv") {
        EXPECT_EQ(r.bytes_held_after, lists * C * row) << name << " C=" << C;
        EXPECT_DOUBLE_EQ(static_cast<double>(r.bytes_held_after) / r.bytes_held_before, static_cast<double>(C) / kPrompt);
      }
      EXPECT_EQ(e.kv_cache().bytes_held(), e.kv_cache().bytes_used()) << "no capacity left behind";
      size_t sum_after = 0;
      for (const auto& l : r.layers) sum_after += l.bytes_after;
      EXPECT_EQ(sum_after, r.bytes_held_after);
      // Cascading keeps only the compressed layers plus the current one: far below the full cache.
      // Evicting as soon as a layer is scored: at most the compressed layers plus one full layer
      // (cascading: the shares of the layers seen so far sum to at most (C − W)·L, + W each).
      // (PyramidKV's schedule does not preserve the total: no such bound.)
      if (name != "pyramidkv") {
        const size_t bound = static_cast<size_t>(C * c.n_layer + kPrompt) * c.n_head_kv * row;
        EXPECT_LE(r.bytes_peak_layerwise, bound) << name;
        EXPECT_LE(r.bytes_held_peak, bound) << name << ": the memory really held during the prefill";
      }
    }
  }
  // The same policy again after Engine::reset (a new prompt): the same result.
  {
    kv::KvCompressor comp(*model_, method("tappa", 64));
    test::OneSequence e(*model_, opts());
    e.set_kv_policy(&comp);
    e.eval(*prompt_);
    const size_t first = e.kv_cache().bytes_held();
    std::vector<std::vector<int>> pos;
    for (int l = 0; l < c.n_layer; ++l) pos.push_back(comp.positions(l, 0));
    for (int i = 0; i < 2; ++i) {
      const int32_t t[1] = {(*decode_)[i]};
      e.eval(t);
    }
    e.reset();
    e.kv_cache().shrink_to_fit();
    e.eval(*prompt_);
    EXPECT_EQ(e.kv_cache().bytes_held(), first);
    for (int l = 0; l < c.n_layer; ++l) EXPECT_EQ(comp.positions(l, 0), pos[l]) << "layer " << l;
  }
  // Ratio unit: r = 0.75 keeps ⌊N/4⌋ tokens per layer.
  kv::KvCompressor comp(*model_, method("snapkv", std::nullopt, 0.75));
  test::OneSequence e(*model_, opts());
  e.set_kv_policy(&comp);
  e.eval(*prompt_);
  EXPECT_EQ(comp.record().capacity, kPrompt / 4);
  EXPECT_EQ(e.kv_cache().bytes_held(), lists * (kPrompt / 4) * row);
}

// h2o can sum the attention rows the engine computes anyway (an observer) instead of recomputing the
// last 512 rows: same kept tokens (up to fp32 near-ties), bit-identical rows.
TEST_F(KvCompress, H2oFromEngineAttentionRowsMatchesRecomputation) {
  const ModelConfig& c = model_->config();
  kv::KvCompressor own(*model_, method("h2o", 96)), rows(*model_, method("h2o", 96));
  test::OneSequence a(*model_, opts()), b(*model_, opts());
  a.set_kv_policy(&own);
  b.set_kv_policy(&rows);
  ASSERT_NE(rows.observer(), nullptr);
  b.set_observer(rows.observer());
  rows.expect_prompt(kPrompt);
  a.eval(*prompt_);
  b.eval(*prompt_);
  EXPECT_FALSE(own.record().h2o_from_engine_rows);
  EXPECT_TRUE(rows.record().h2o_from_engine_rows);
  EXPECT_GT(rows.record().t_observe, 0.0);
  int differ = 0, total = 0;
  for (int l = 0; l < c.n_layer; ++l)
    for (int h = 0; h < c.n_head_kv; ++h) {
      const std::vector<int>& pa = own.positions(l, h);
      const std::vector<int>& pb = rows.positions(l, h);
      ASSERT_EQ(pa.size(), pb.size());
      std::vector<int> only;
      std::set_symmetric_difference(pa.begin(), pa.end(), pb.begin(), pb.end(), std::back_inserter(only));
      differ += static_cast<int>(only.size()) / 2;
      total += static_cast<int>(pa.size());
      for (size_t r = 0; r < pb.size(); ++r)
        ASSERT_EQ(std::memcmp(b.kv_cache().keys(l, h) + r * c.head_dim, fk(l, h).data() + static_cast<size_t>(pb[r]) * c.head_dim,
                              sizeof(float) * c.head_dim),
                  0);
    }
  EXPECT_LE(differ, total / 100) << differ << " of " << total << " kept tokens differ";
  // Without the hint the rows are not collected and h2o falls back to its own pass.
  kv::KvCompressor nohint(*model_, method("h2o", 96));
  test::OneSequence e(*model_, opts());
  e.set_kv_policy(&nohint);
  e.set_observer(nohint.observer());
  e.eval(*prompt_);
  EXPECT_FALSE(nohint.record().h2o_from_engine_rows);
  for (int l = 0; l < c.n_layer; ++l) EXPECT_EQ(nohint.positions(l, 0), own.positions(l, 0));
}

// (5) TAPPA: lower q-similarity ⇒ more budget (α = ∞: b_l ∝ 1 − qsim_l up to integer rounding), and
// the recorded q-sim is the window q-similarity of the uncompressed run's queries.
TEST_F(KvCompress, TappaGivesMoreBudgetToLowerQsimLayers) {
  const ModelConfig& c = model_->config();
  kv::KvCompressor comp(*model_, method("tappa", 96));
  test::OneSequence e(*model_, opts());
  e.set_kv_policy(&comp);
  e.eval(*prompt_);
  const auto& layers = comp.record().layers;
  double lo = 1, hi = -1;
  for (int i = 0; i < c.n_layer; ++i) {
    const double q = kv::layer_qsim(kv::HeadsView::token_major((*q_)[i].data(), kW, c.n_head, c.head_dim));
    EXPECT_NEAR(layers[i].qsim, q, 1e-9) << "layer " << i;
    EXPECT_NEAR(layers[i].preference, 1.0 - layers[i].qsim, 1e-12);
    lo = std::min(lo, layers[i].qsim);
    hi = std::max(hi, layers[i].qsim);
    for (int j = 0; j < c.n_layer; ++j)
      if (layers[i].qsim < layers[j].qsim - 1e-9) {
        EXPECT_GE(layers[i].budget, layers[j].budget - 1)
            << "layer " << i << " (q-sim " << layers[i].qsim << ") vs layer " << j << " (q-sim " << layers[j].qsim << ")";
      }
  }
  EXPECT_GT(hi - lo, 0.05) << "the layers' q-similarities should differ on this text";
  // Budgets really differ (not a uniform split in disguise) and follow 1 − qsim.
  int bmin = 1 << 30, bmax = 0;
  double sum_pref = 0;
  for (const auto& l : layers) {
    bmin = std::min(bmin, l.budget);
    bmax = std::max(bmax, l.budget);
    sum_pref += l.preference;
  }
  EXPECT_GT(bmax - bmin, 5);
  const double total = static_cast<double>(96 - kW) * c.n_layer;
  for (const auto& l : layers) EXPECT_NEAR(l.budget - kW, l.preference / sum_pref * total, 1.0 + 1e-9);
  // tappa-head: inside a layer, the KV head with the lower group q-sim gets at least as much.
  kv::KvCompressor ch(*model_, method("tappa-head", 96));
  test::OneSequence eh(*model_, opts());
  eh.set_kv_policy(&ch);
  eh.eval(*prompt_);
  for (const auto& l : ch.record().layers)
    for (size_t a = 0; a < l.heads.size(); ++a)
      for (size_t b = 0; b < l.heads.size(); ++b)
        if (l.heads[a].qsim < l.heads[b].qsim - 1e-9) {
          EXPECT_GE(l.heads[a].budget, l.heads[b].budget - 1) << "layer " << l.layer;
        }
}

// (6) Decode eviction keeps every (layer, KV head) at ≤ b + W after every step.
TEST_F(KvCompress, DecodeEvictionBoundsEveryLayer) {
  const ModelConfig& c = model_->config();
  for (const std::string name : {"tappa", "tappa-head", "snapkv"}) {
    kv::CompressorFlags f;
    f.method = name;
    f.budget = 64;
    f.decode_evict = true;
    kv::KvCompressor comp(*model_, kv::make_compressor_options(f));
    test::OneSequence e(*model_, opts());
    e.set_kv_policy(&comp);
    e.eval(*prompt_);
    std::vector<int> after_prefill;
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) after_prefill.push_back(e.kv_cache().length(l, h));
    for (int step = 0; step < 6; ++step) {
      const int32_t t[1] = {(*decode_)[step % kDecode]};
      e.eval(t);
      for (int l = 0; l < c.n_layer; ++l)
        for (int h = 0; h < c.n_head_kv; ++h) {
          const int n = e.kv_cache().length(l, h), b = comp.decode_budget(l, h);
          EXPECT_LE(n, b + kW) << name << " step " << step << " l" << l << " h" << h;
          EXPECT_LE(n, after_prefill[l * c.n_head_kv + h] + 1);
          // The newest token is always kept (it is in the window), at its true position.
          const std::vector<int>& pos = comp.positions(l, h);
          ASSERT_EQ(static_cast<int>(pos.size()), n);
          EXPECT_EQ(pos.back(), kPrompt + step);
        }
    }
    EXPECT_EQ(comp.record().decode_steps, 6);
    EXPECT_GT(comp.record().decode_evicted, 0) << name;
  }
  // Batched: lists grow to b + W + K − 1, then go back to b + W.
  kv::CompressorFlags f;
  f.method = "tappa";
  f.budget = 64;
  f.decode_evict_every = 4;
  kv::KvCompressor comp(*model_, kv::make_compressor_options(f));
  test::OneSequence e(*model_, opts());
  e.set_kv_policy(&comp);
  e.eval(*prompt_);
  const int n0 = e.kv_cache().length(0, 0);
  for (int step = 0; step < 6; ++step) {
    const int32_t t[1] = {(*decode_)[step % kDecode]};
    e.eval(t);
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) EXPECT_LE(e.kv_cache().length(l, h), comp.decode_budget(l, h) + kW + 3);
    // Layer 0 holds b + W after prefill: 3 steps grow it, the 4th cuts it back.
    EXPECT_EQ(e.kv_cache().length(0, 0), step % 4 == 3 ? n0 : n0 + step % 4 + 1) << step;
  }
}

// Invalid budgets: one-line tappa::Error.
TEST_F(KvCompress, InvalidBudgetsAreOneLineErrors) {
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error (expected '" << needle << "')";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_error([] { method("snapkv", 0); }, "--budget");
  expect_error([] { method("snapkv", -5); }, "--budget");
  expect_error([] { method("snapkv", std::nullopt, 1.0); }, "--ratio");
  expect_error([] { method("nosuch", 10); }, "unknown KV compression method");
  expect_error([] {
    kv::CompressorFlags f;
    f.method = "snapkv";
    kv::make_compressor_options(f);
  }, "needs a budget");
  // Below the window while the prompt needs compressing.
  kv::KvCompressor small(*model_, method("snapkv", 16));
  expect_error([&] { small.check(kPrompt); }, "smaller than the window");
  EXPECT_NO_THROW(small.check(10));  // nothing to compress
  test::OneSequence e(*model_, opts());
  e.set_kv_policy(&small);
  expect_error([&] { e.eval(*prompt_); }, "smaller than the window");
  kv::KvCompressor tiny_ratio(*model_, method("snapkv", std::nullopt, 0.99));
  expect_error([&] { tiny_ratio.check(kPrompt); }, "ratio");
}

// The CLI: every method listed in --help, a clean error line for a bad budget, and the table.
TEST_F(KvCompress, CliListsMethodsAndReports) {
  const fs::path dir = fs::temp_directory_path() / ("tappa_kvc_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto sh = [&](const std::string& args, std::string& out, std::string& err) {
    const std::string cmd = "timeout 300 " + test::binary_dir() + "/tappa " + args + " >" + (dir / "o").string() +
                            " 2>" + (dir / "e").string() + " </dev/null";
    const int st = std::system(cmd.c_str());
    out = slurp(dir / "o");
    err = slurp(dir / "e");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  std::string out, err;
  for (const std::string sub : {"run", "compress"}) {
    ASSERT_EQ(sh(sub + " --help", out, err), 0);
    for (const kv::Method& m : kv::all_methods()) {
      const std::string line = "  " + std::string(m.name) + " ";
      EXPECT_NE(out.find(line), std::string::npos) << sub << " --help misses " << m.name;
      EXPECT_NE(out.find(std::string(m.description)), std::string::npos);
    }
  }
  const std::string model = "-m " + test::default_model() + " -t 2 ";
  EXPECT_NE(sh("compress " + model + "-p 'hello world' --kv snapkv --budget 0", out, err), 0);
  EXPECT_EQ(err.rfind("tappa: error: ", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  const fs::path text = test::source_dir() + "/tests/data/prompts/prose_lighthouse.txt";
  EXPECT_NE(sh("run " + model + "-f " + text.string() + " -n 4 --kv tappa --budget 8", out, err), 0);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("smaller than the window"), std::string::npos) << err;

  ASSERT_EQ(sh("compress " + model + "-f " + text.string() + " --max-tokens 200 --kv tappa --budget 64 --json " +
                   (dir / "r.json").string(),
               out, err),
            0)
      << err;
  EXPECT_NE(out.find("KvCache::bytes_held: before"), std::string::npos) << out;
  const auto j = nlohmann::json::parse(slurp(dir / "r.json"));
  EXPECT_EQ(j["record"]["n_prompt"].get<int>(), 200);
  EXPECT_EQ(j["record"]["capacity"].get<int>(), 64);
  EXPECT_EQ(j["record"]["layers"].size(), static_cast<size_t>(model_->config().n_layer));
  EXPECT_EQ(j["record"]["layers"][0]["heads"].size(), static_cast<size_t>(model_->config().n_head_kv));
  EXPECT_EQ(j["record"]["bytes_held_after"].get<size_t>(), j["record"]["bytes_expected"].get<size_t>());

  ASSERT_EQ(sh("run " + model + "-f " + text.string() + " -n 4 --kv snapkv --budget 64", out, err), 0) << err;
  EXPECT_NE(err.find("KV bytes held before"), std::string::npos) << err;

  // The knob flags are spec keys (cli/common.h: KvFlags): flags and the same spec give the same
  // compression, and a spec string works in --kv.
  const std::string base = "compress " + model + "-f " + text.string() + " --max-tokens 200 --budget 64 --json ";
  ASSERT_EQ(sh(base + (dir / "flags.json").string() + " --kv tappa --kv-window 16 --gamma 50 --pool max7 --no-cascading",
               out, err), 0) << err;
  ASSERT_EQ(sh(base + (dir / "spec.json").string() + " --kv tappa:window=16:gamma=50:pool=max7:cascading=0", out, err), 0)
      << err;
  auto kept = [](const nlohmann::json& r) {
    std::vector<int> v;
    for (const auto& l : r["record"]["layers"]) v.push_back(l["kept"].get<int>());
    return v;
  };
  const auto jf = nlohmann::json::parse(slurp(dir / "flags.json"));
  const auto js = nlohmann::json::parse(slurp(dir / "spec.json"));
  EXPECT_EQ(jf["record"]["window"].get<int>(), 16);
  EXPECT_FALSE(jf["record"]["cascading"].get<bool>());
  EXPECT_EQ(js["record"]["window"].get<int>(), 16);
  EXPECT_FALSE(js["record"]["cascading"].get<bool>());
  EXPECT_EQ(kept(jf), kept(js));
  EXPECT_EQ(jf["record"]["bytes_held_after"], js["record"]["bytes_held_after"]);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tappa
