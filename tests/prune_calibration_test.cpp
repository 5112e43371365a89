// Calibration (BI and pre-RoPE q-similarity per layer) against a direct computation from captured
// activations: q-similarity by the analysis module's pairwise path, BI by an explicit cosine loop
// with the last block compared to the final-norm output.
#include <gtest/gtest.h>

#include <cmath>

#include "analysis/qsim.h"
#include "one_sequence.h"
#include "prune/calibration.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "test_util.h"

namespace {

using namespace tappa;

// Captures every layer's pre-RoPE queries and every block's input/output rows.
struct Capture : Observer {
  int n_layer;
  explicit Capture(int n) : n_layer(n), q(n), in(n + 1), out(n + 1) {}
  std::vector<std::vector<float>> q, in, out;
  int H = 0, D = 0;
  void on_qk(const LayerQk& qk) override {
    H = qk.n_head;
    D = qk.head_dim;
    q[qk.layer].insert(q[qk.layer].end(), qk.q_pre, qk.q_pre + static_cast<size_t>(qk.n_tokens) * H * D);
  }
  void on_block(int l, const float* a, const float* b, int n, int E) override {
    in[l].insert(in[l].end(), a, a + static_cast<size_t>(n) * E);
    out[l].insert(out[l].end(), b, b + static_cast<size_t>(n) * E);
  }
};

double mean_one_minus_cos(const std::vector<float>& a, const std::vector<float>& b, int E) {
  const size_t T = a.size() / E;
  double s = 0;
  for (size_t t = 0; t < T; ++t) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < E; ++i) {
      ab += double(a[t * E + i]) * b[t * E + i];
      aa += double(a[t * E + i]) * a[t * E + i];
      bb += double(b[t * E + i]) * b[t * E + i];
    }
    s += 1 - ab / std::sqrt(aa * bb);
  }
  return s / T;
}

void check_model(const std::string& path) {
  const auto model = Model::load(path);
  const ModelConfig& c = model->config();
  std::vector<int32_t> toks = model->tokenizer().encode(
      "Queries that stay alike over time make attention predictable; this sentence is the calibration text.");
  ASSERT_GT(toks.size(), 10u);
  const int T = static_cast<int>(toks.size());

  // Reference: one window = the whole text, captured with small batches so the observer sees
  // several chunks per layer.
  Capture cap(c.n_layer);
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = 256;
  eo.n_batch = 7;
  test::OneSequence e(*model, eo);
  e.set_observer(&cap);
  e.eval(toks);
  std::vector<double> ref_bi(c.n_layer), ref_q(c.n_layer);
  analysis::QsimOptions pairwise;
  pairwise.cosine_fast_path = false;
  for (int l = 0; l < c.n_layer; ++l) {
    ref_q[l] = analysis::qsim_layer(cap.q[l].data(), T, cap.H, cap.D, pairwise).mean;
    // Last block: its input against the final-norm output (Hugging Face's last hidden state).
    ref_bi[l] = l + 1 < c.n_layer ? mean_one_minus_cos(cap.in[l], cap.out[l], c.n_embd)
                                  : mean_one_minus_cos(cap.in[l], cap.out[c.n_layer], c.n_embd);
  }

  const std::vector<std::vector<int32_t>> texts = {toks};
  const std::vector<int64_t> lens = {T};
  const auto windows = prune::make_windows(lens, T, T);
  ASSERT_EQ(windows.size(), 1u);
  prune::CalibrationOptions opt;
  opt.window = T;
  opt.stride = T;
  opt.n_threads = 1;
  prune::CalibrationState st;
  prune::run_calibration(*model, texts, windows, opt, st, nullptr);
  // Both sides see identical fp32 activations; they differ only in double summation order
  // (incremental sums vs. pairwise), so 1e-9 is far above rounding and far below any real error.
  for (int l = 0; l < c.n_layer; ++l) {
    EXPECT_NEAR(st.bi()[l], ref_bi[l], 1e-9) << path << " layer " << l;
    EXPECT_NEAR(st.qsim()[l], ref_q[l], 1e-9) << path << " layer " << l;
    EXPECT_GT(st.bi()[l], 0.0);
  }
  // Two windows average: run a split and compare with the mean of the two single-window values.
  prune::CalibrationState two;
  const auto w2 = prune::make_windows(lens, T / 2 + 1, T / 2 + 1);
  prune::CalibrationOptions o2 = opt;
  o2.window = T / 2 + 1;
  prune::run_calibration(*model, texts, w2, o2, two, nullptr);
  EXPECT_EQ(two.windows_done, static_cast<int>(w2.size()));
  double manual = 0;
  for (const auto& w : w2) {
    prune::CalibrationState one;
    prune::run_calibration(*model, texts, std::vector<prune::WindowRef>{w}, o2, one, nullptr);
    manual += one.qsim()[0] / w2.size();
  }
  EXPECT_NEAR(two.qsim()[0], manual, 1e-12);
}

TEST(PruneCalibration, MatchesDirectComputationTiny) {
  const std::string p = test::binary_dir() + "/tiny/qwen2_tiny.gguf";
  if (!test::exists(p)) GTEST_SKIP() << "tiny model not found";
  check_model(p);
}

TEST(PruneCalibration, MatchesDirectComputationDefaultModel) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  check_model(test::default_model());
}

TEST(PruneCalibration, OfficialWindowing) {
  // Starts 0, 256, 512, ... < n; lengths min(1024, n - start); length-1 windows dropped.
  const std::vector<int64_t> lens = {1300, 257, 1};
  const auto w = prune::make_windows(lens, 1024, 256);
  std::vector<std::pair<int64_t, int>> got;
  for (const auto& x : w) got.push_back({x.start, x.length});
  const std::vector<std::pair<int64_t, int>> want = {{0, 1024}, {256, 1024}, {512, 788}, {768, 532}, {1024, 276},
                                                     {1280, 20}, {0, 257}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(w.back().text, 1);
  EXPECT_THROW(prune::make_windows(lens, 1, 256), Error);
  EXPECT_THROW(prune::make_windows(lens, 1024, 0), Error);
}

}  // namespace
