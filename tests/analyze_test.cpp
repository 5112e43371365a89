// `tappa analyze` end to end on the default model (small inputs to keep CI fast): the report files
// exist, the JSON is internally consistent, the HTML shows the JSON's numbers, and the capture
// observer hands over proper attention rows.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/analyzer.h"
#include "analysis/capture.h"
#include "one_sequence.h"
#include "tappa/analysis.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "test_util.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;

using tappa::test::slurp;

class Analyze : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::exists(test::default_model())) model_ = Model::load(test::default_model());
  }
  static void TearDownTestSuite() {
    model_.reset();
    model_ = nullptr;
  }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "default model missing: run scripts/fetch_model.sh";
    dir_ = fs::temp_directory_path() / ("tappa_analyze_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string text() { return slurp(test::source_dir() + "/tests/data/prompts/prose_lighthouse.txt"); }
  static std::shared_ptr<Model> model_;
  fs::path dir_;
};
std::shared_ptr<Model> Analyze::model_;

TEST_F(Analyze, ReportIsCompleteAndConsistent) {
  AnalysisOptions o;
  o.input_name = "prose_lighthouse";
  o.max_tokens = 200;
  o.rows = 24;
  o.last_window = 24;
  o.sliding_window = 128;
  o.sliding_stride = 64;
  o.grid = 32;
  o.gallery = 4;
  o.n_threads = 2;
  const auto j = analysis::analyze(*model_, text(), o, dir_.string());
  const ModelConfig& c = model_->config();

  ASSERT_TRUE(fs::exists(dir_ / "report.json"));
  ASSERT_TRUE(fs::exists(dir_ / "report.html"));
  EXPECT_EQ(nlohmann::json::parse(slurp(dir_ / "report.json")), j);

  ASSERT_EQ(j["heads"].size(), static_cast<size_t>(c.n_layer * c.n_head));
  ASSERT_EQ(j["layers"].size(), static_cast<size_t>(c.n_layer));
  int total = 0;
  for (const auto& [k, v] : j["label_counts"].items()) total += v.get<int>();
  EXPECT_EQ(total, c.n_layer * c.n_head);
  for (const auto& h : j["heads"]) {
    const double q = h["qsim_post_last"].get<double>();
    EXPECT_GE(q, -1.0 - 1e-9);
    EXPECT_LE(q, 1.0 + 1e-9);
    const double st = h["metrics"]["topk_stability"].get<double>();
    EXPECT_GE(st, 0.0);
    EXPECT_LE(st, 1.0);
    EXPECT_EQ(h["rope"]["channel_energy"].size(), static_cast<size_t>(c.n_rot / 2));
  }
  // Layer values are the means of their heads.
  for (int l = 0; l < c.n_layer; ++l) {
    double sum = 0;
    for (int h = 0; h < c.n_head; ++h) sum += j["heads"][l * c.n_head + h]["qsim_post_last"].get<double>();
    EXPECT_NEAR(j["layers"][l]["qsim_post_last"].get<double>(), sum / c.n_head, 1e-12);
  }
  EXPECT_EQ(j["correlation"]["n"].get<int>(), c.n_layer * c.n_head);
  const double rho = j["correlation"]["spearman"].get<double>();
  EXPECT_TRUE(std::isfinite(rho));

  // The page shows the JSON's numbers and embeds every gallery picture.
  const std::string html = slurp(dir_ / "report.html");
  char rho_text[32];
  std::snprintf(rho_text, sizeof rho_text, "%.3f", rho);
  EXPECT_NE(html.find(rho_text), std::string::npos) << "Spearman " << rho_text << " not in the HTML";
  ASSERT_EQ(j["gallery"].size(), 4u);
  for (const auto& g : j["gallery"]) {
    EXPECT_TRUE(fs::exists(dir_ / g["png"].get<std::string>()));
    EXPECT_TRUE(fs::exists(dir_ / g["zoom_png"].get<std::string>()));
  }
  // Self-contained: nothing is loaded from elsewhere (SVG's xmlns URI is a name, not a load).
  for (const char* ref : {"src=\"http", "href=\"http", "url(http", "src='http"})
    EXPECT_EQ(html.find(ref), std::string::npos) << "the report loads " << ref;
}

TEST_F(Analyze, ChannelSwapInterventionComparesWithBaseline) {
  AnalysisOptions o;
  o.max_tokens = 96;
  o.rows = 16;
  o.last_window = 16;
  o.sliding_window = 64;
  o.sliding_stride = 32;
  o.grid = 16;
  o.gallery = 2;
  o.n_threads = 2;
  o.channel_swap = std::make_pair(30, 2);
  const auto j = analysis::analyze(*model_, text(), o, dir_.string());
  ASSERT_FALSE(j["intervention"].is_null());
  EXPECT_EQ(j["intervention"]["kind"], "channel_swap");
  EXPECT_EQ(j["intervention"]["baseline"]["layers"].size(), static_cast<size_t>(model_->config().n_layer));
  // Swapping a low- and a high-frequency channel changes what RoPE does to the queries, so the
  // post-RoPE q-similarity of some layer must move.
  double moved = 0;
  for (int l = 0; l < model_->config().n_layer; ++l)
    moved = std::max(moved, std::fabs(j["layers"][l]["qsim_post_last"].get<double>() -
                                      j["intervention"]["baseline"]["layers"][l]["qsim_post_last"].get<double>()));
  EXPECT_GT(moved, 1e-3);
}

// Queries produced during generation are analysed like prompt queries: the measured rows then end
// at the last generated position.
TEST_F(Analyze, GeneratedTokensAreAnalysed) {
  AnalysisOptions o;
  o.max_tokens = 64;
  o.generate = 6;
  o.rows = 8;
  o.last_window = 8;
  o.sliding_window = 32;
  o.sliding_stride = 16;
  o.grid = 16;
  o.gallery = 1;
  o.n_threads = 2;
  const auto j = analysis::analyze(*model_, text(), o, dir_.string());
  EXPECT_EQ(j["input"]["n_prompt_tokens"].get<int>(), 64);
  EXPECT_EQ(j["input"]["n_generated"].get<int>(), 6);
  EXPECT_EQ(j["input"]["n_tokens"].get<int>(), 70);
  EXPECT_FALSE(j["input"]["generated_text"].get<std::string>().empty());
}

// The public API's in-memory result (include/tappa/analysis.h) is the report's data: every head's
// q-similarity variants, label and channels equal report.json's, analysing writes nothing, and the
// report is written only when asked.
TEST_F(Analyze, InMemoryResultMatchesTheReport) {
  AnalysisOptions o;
  o.max_tokens = 96;
  o.rows = 16;
  o.last_window = 16;
  o.sliding_window = 64;
  o.sliding_stride = 32;
  o.grid = 16;
  o.gallery = 2;
  o.n_threads = 2;
  std::vector<std::string> passes;
  std::vector<std::pair<int64_t, int64_t>> progress;
  o.on_pass = [&](const std::string& p) { passes.push_back(p); };
  RunControl rc;
  rc.on_progress = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
  const AnalysisResult r = analyze_text(*model_, text(), o, rc);
  EXPECT_FALSE(fs::exists(dir_));
  EXPECT_EQ(passes, std::vector<std::string>{"analyze"});
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.front(), std::make_pair(int64_t{0}, r.n_tokens));
  EXPECT_EQ(progress.back(), std::make_pair(r.n_tokens, r.n_tokens));
  const ModelConfig& c = model_->config();
  ASSERT_EQ(r.heads.size(), static_cast<size_t>(c.n_layer) * c.n_head);
  ASSERT_EQ(r.layers.size(), static_cast<size_t>(c.n_layer));
  const nlohmann::json written = write_analysis_report(r, dir_.string());
  EXPECT_TRUE(fs::exists(dir_ / "report.json"));
  EXPECT_TRUE(fs::exists(dir_ / "report.html"));
  for (size_t i = 0; i < r.heads.size(); ++i) {
    const HeadAnalysis& h = r.heads[i];
    const nlohmann::json& jh = written["heads"][i];
    EXPECT_EQ(h.layer, jh["layer"].get<int>());
    EXPECT_EQ(h.head, jh["head"].get<int>());
    EXPECT_EQ(h.qsim_pre_last, jh["qsim_pre_last"].get<double>());
    EXPECT_EQ(h.qsim_post_last, jh["qsim_post_last"].get<double>());
    EXPECT_EQ(h.qsim_pre_sliding, jh["qsim_pre_sliding"].get<double>());
    EXPECT_EQ(h.qsim_post_sliding, jh["qsim_post_sliding"].get<double>());
    EXPECT_EQ(h.ksim_lag1, jh["ksim_lag1"].get<double>());
    EXPECT_EQ(h.topk_predictability, jh["metrics"]["topk_predictability"].get<double>());
    EXPECT_EQ(h.label, jh["label"].get<std::string>());
    EXPECT_EQ(h.predicted_label, jh["predicted_label"].get<std::string>());
    EXPECT_EQ(h.dominant_channel, jh["rope"]["dominant_channel"].get<int>());
    EXPECT_EQ(h.channel_energy.size(), static_cast<size_t>(c.n_rot / 2));
    EXPECT_GE(h.qsim_pre_last, -1.0);
    EXPECT_LE(h.qsim_pre_last, 1.0 + 1e-9);
  }
  for (int l = 0; l < c.n_layer; ++l) {
    double mean = 0;
    for (int h = 0; h < c.n_head; ++h) mean += r.heads[static_cast<size_t>(l) * c.n_head + h].qsim_pre_last;
    EXPECT_NEAR(r.layers[l].qsim_pre_last, mean / c.n_head, 1e-12);
  }
}

// A cancelled token stops the forward pass with ErrorCode::cancelled (what the CLI's SIGINT sets).
TEST_F(Analyze, CancelledTokenStopsWithCancelled) {
  AnalysisOptions o;
  o.max_tokens = 64;
  o.n_threads = 2;
  CancelToken token;
  token.cancel();
  RunControl rc;
  rc.cancel = &token;
  try {
    analyze_text(*model_, text(), o, rc);
    FAIL() << "a cancelled analysis returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::cancelled) << e.what();
  }
}

TEST_F(Analyze, BadOptionsAreErrors) {
  AnalysisOptions o;
  EXPECT_THROW(analysis::analyze(*model_, "too short", o, dir_.string()), Error);
  o.channel_swap = std::make_pair(3, 3);
  EXPECT_THROW(analysis::analyze(*model_, text(), o, dir_.string()), Error);
}

// The observer receives every row: probabilities over keys 0..pos that sum to 1, and the grid cell
// means are bounded by the row maxima.
TEST_F(Analyze, CaptureRowsAreProbabilityRows) {
  std::vector<int32_t> toks = model_->tokenizer().encode(text(), true, false);
  toks.resize(100);
  analysis::CaptureOptions co;
  co.n_tokens = 100;
  co.rows = 10;
  co.grid = 10;
  co.zoom = 10;
  analysis::AttentionCapture cap(model_->config(), co);
  int layers_done = 0;
  cap.set_layer_done([&](int l) {
    ++layers_done;
    for (int h = 0; h < model_->config().n_head; ++h) {
      const auto& rows = cap.rows(l, h);
      ASSERT_EQ(rows.size(), 10u);
      for (size_t r = 0; r < rows.size(); ++r) {
        ASSERT_EQ(rows[r].size(), 90 + r + 1);
        double s = 0;
        for (float p : rows[r]) s += p;
        EXPECT_NEAR(s, 1.0, 1e-4);
      }
    }
  });
  test::OneSequence engine(*model_, EngineOptions{2, 100, 37});  // batches of 37: rows arrive across batches
  engine.set_observer(&cap);
  engine.eval(toks);
  EXPECT_EQ(layers_done, model_->config().n_layer);
  EXPECT_EQ(cap.n_tokens(), 100);
  EXPECT_EQ(cap.q_pre(0).size(), static_cast<size_t>(100) * model_->config().n_head * model_->config().head_dim);
  const auto g = cap.grid(3, 1);
  for (int r = 0; r < 10; ++r) {
    double s = 0;
    for (int cidx = 0; cidx < 10; ++cidx) s += g[r * 10 + cidx] * 10;  // 10 keys per cell
    EXPECT_GT(s, 0.5);  // each grid row holds ~1 unit of attention (mean row mass)
    for (int cidx = r + 1; cidx < 10; ++cidx) EXPECT_EQ(g[r * 10 + cidx], 0.0f) << "mass above the diagonal";
  }
}

}  // namespace
}  // namespace tappa
