// The eval-kv harness against the official protocols (issue #16, part 2). Each test failed on the code
// before its fix:
//   - decode-time eviction: the runner decoded with no KV policy attached, so `decode-evict=1` was
//     accepted and ignored and every list grew by one row per generated token;
//   - LongBench's chat template: it was applied to every dataset, while LongBench's pred.py skips it
//     for trec, triviaqa, samsum, lsht, lcc and repobench-p (samsum also stops at a newline);
//   - method-spec keys: StreamingLLM's "first C − W", H2O's rows and mask, SnapKV's mean and Expected
//     Attention's knobs had no key, so the paper's StreamingLLM and H2O rows could not be run;
//   - the calibrate score files: "bi"/"qsim" with a descending q-sim order, where the official raw-score
//     files say "BI"/"q_similarity" and sort both ascending.
// The checks are on what a run produces (cache rows per layer after decoding, prompt lengths, the
// options a spec yields, the files written), so they hold whatever the engine's internals become.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "evalkv/longbench.h"
#include "evalkv/runner.h"
#include "kv/compressor.h"
#include "one_sequence.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "tappa/prune.h"
#include "tappa/tokenizer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace tappa;

fs::path temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("tappa_evalkv_protocol_" + tag + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A LongBench-format file with one record of `dataset` whose context is ~`words` words of varied prose.
std::string write_record(const fs::path& dir, const std::string& dataset, int words) {
  std::string ctx;
  for (int i = 0; static_cast<int>(ctx.size()) < words * 6; ++i)
    ctx += "Passage " + std::to_string(i % 9 + 1) + ": the " + (i % 3 ? "harbour" : "mill") + " of town " +
           std::to_string((i * 37) % 101) + " reopened in " + std::to_string(1900 + (i * 13) % 120) + ". ";
  const nlohmann::json rec = {{"input", "Which town reopened its mill?"}, {"context", ctx},
                              {"answers", {"town 37"}},                   {"dataset", dataset},
                              {"all_classes", nullptr},                   {"length", words},
                              {"_id", "t0"}};
  const fs::path p = dir / (dataset + ".jsonl");
  std::ofstream(p) << rec.dump() << "\n";
  return p.string();
}

nlohmann::json run(const Model& model, evalkv::GridConfig cfg) {
  cfg.model_path = test::default_model();
  cfg.threads = 1;  // the thread pool spins: one thread is the cheapest on a loaded machine
  nlohmann::json results;
  EXPECT_TRUE(evalkv::run_grid(model, cfg, results, [](const nlohmann::json&, bool) {}));
  return results;
}

class EvalKvProtocol : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::exists(test::default_model())) model_ = Model::load(test::default_model());
  }
  static void TearDownTestSuite() {
    model_.reset();
    model_ = nullptr;
  }
  static std::shared_ptr<Model> model_;
};
std::shared_ptr<Model> EvalKvProtocol::model_;

// CAKE's decode evictor (on by default for cake/tappa, decode-evict=1 for the others) keeps every
// layer at ≤ b_l + W rows while generating; with decode-evict=0 the lists grow by one row per
// generated token. Both modes: query-agnostic appends the question uncompressed first.
TEST_F(EvalKvProtocol, DecodeEvictionBoundsTheCacheDuringGeneration) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const fs::path dir = temp_dir("decode");
  evalkv::GridConfig cfg;
  cfg.tasks = {"longbench:" + write_record(dir, "multi_news", 300)};
  cfg.lengths = {384};
  cfg.samples = 1;
  cfg.budgets = {64};
  cfg.longbench_max_new = 16;
  cfg.modes = {"query-aware", "query-agnostic"};
  for (const char* m : {"fullkv", "cake", "cake:decode-evict=0", "tappa", "snapkv:decode-evict=1"})
    cfg.methods.push_back(m);
  const nlohmann::json res = run(*model_, cfg);
  int checked = 0;
  for (const auto& c : res["cells"]) {
    const std::string method = c["method"];
    const std::string what = method + " / " + c["mode"].get<std::string>();
    SCOPED_TRACE(what);
    if (method == "fullkv") continue;
    ASSERT_TRUE(c.contains("end_layer_rows")) << "the cell does not report the cache after decoding";
    ASSERT_TRUE(c["compressed"].get<bool>());
    const auto budgets = c["layer_budgets"].get<std::vector<int>>();  // b_l + W per layer
    const auto end = c["end_layer_rows"].get<std::vector<int>>();
    ASSERT_EQ(budgets.size(), end.size());
    // The generation must be long enough to tell growth from eviction (greedy: deterministic).
    const int gen_steps = c["decoded_tokens"].get<int>();
    ASSERT_GE(gen_steps, 8) << "prediction: " << c["prediction"];
    const bool evicts = method == "cake" || method == "tappa" || method == "snapkv:decode-evict=1";
    EXPECT_EQ(c["decode_steps"].get<int>(), evicts ? gen_steps : 0);  // the decode hook ran once per step
    for (size_t l = 0; l < end.size(); ++l) {
      if (evicts) {
        EXPECT_LE(end[l], budgets[l]) << "layer " << l << " grew past b_l + W while decoding";
      } else {
        // Nothing evicted after the prefill: every decoded token (and the question) added a row.
        EXPECT_GT(end[l], budgets[l]) << "layer " << l;
        EXPECT_GE(end[l], budgets[l] + gen_steps) << "layer " << l;
      }
    }
    if (evicts) EXPECT_GT(c["decode_evicted"].get<int64_t>(), 0);
    else EXPECT_EQ(c["decode_evicted"].get<int64_t>(), 0);
    ++checked;
  }
  EXPECT_EQ(checked, 2 * 4);
  fs::remove_all(dir);
}

// LongBench's pred.py: no chat template for trec, triviaqa, samsum, lsht, lcc, repobench-p.
TEST(EvalKvLongBenchProtocol, ChatTemplateAndNewlineStopPerDataset) {
  for (const char* raw : {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
    EXPECT_FALSE(evalkv::longbench_uses_chat_template(raw)) << raw;
  for (const char* chat : {"narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report",
                           "qmsum", "multi_news", "passage_count", "passage_retrieval_en"})
    EXPECT_TRUE(evalkv::longbench_uses_chat_template(chat)) << chat;
  auto words = [](std::string_view s) { return static_cast<int>(s.size() / 5 + 1); };
  auto cut = [](std::string_view s, int, int) { return std::string(s); };
  for (const char* ds : {"samsum", "trec", "qasper", "trec_e"}) {
    evalkv::LongBenchRecord r;
    r.context = "a: hi\nb: hello";
    r.input = "Dialogue: x\nSummary:";
    r.answers = {"greeting"};
    r.dataset = ds;
    const evalkv::TaskSample s = evalkv::longbench_sample(r, "longbench:file", 0, 4000, 64, words, cut);
    const std::string d = ds;
    EXPECT_EQ(s.chat_template, d == "qasper") << ds;
    EXPECT_EQ(s.stop_at_newline, d == "samsum") << ds;  // pred.py stops samsum at "\n"
    EXPECT_EQ(s.dataset, d == "trec_e" ? "trec" : d);
  }
  // Without a dataset field the task name says it.
  evalkv::LongBenchRecord r;
  r.context = "c";
  r.answers = {"a"};
  EXPECT_FALSE(evalkv::longbench_sample(r, "longbench_lcc", 0, 4000, 64, words, cut).chat_template);
}

// The same through the runner: a trec prompt is the plain text (n_prompt = its tokens), a qasper prompt
// of the same record is longer by the chat template's markers.
TEST_F(EvalKvProtocol, RunnerSkipsTheChatTemplateWhereLongBenchDoes) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const Tokenizer& tok = model_->tokenizer();
  ASSERT_FALSE(tok.chat_template().empty()) << "the test needs a model with a chat template";
  const fs::path dir = temp_dir("chat");
  for (const char* ds : {"trec", "qasper"}) {
    SCOPED_TRACE(ds);
    const std::string file = write_record(dir, ds, 120);
    evalkv::GridConfig cfg;
    cfg.tasks = {"longbench:" + file};
    cfg.lengths = {1024};
    cfg.samples = 1;
    cfg.longbench_max_new = 4;
    cfg.modes = {"query-aware"};
    cfg.methods = {"fullkv"};
    const nlohmann::json res = run(*model_, cfg);
    ASSERT_EQ(res["cells"].size(), 1u);
    const auto recs = evalkv::read_longbench_file(file);
    const auto count = [&](std::string_view s) { return static_cast<int>(tok.encode(s, false, false).size()); };
    const evalkv::TaskSample s = evalkv::longbench_sample(recs[0], cfg.tasks[0], 0, 1024, 4, count,
                                                          [](std::string_view t, int, int) { return std::string(t); });
    const int plain = static_cast<int>(tok.encode(s.context, true, false).size() +
                                       tok.encode(s.question + s.answer_prefix, false, false).size());
    const int n_prompt = res["cells"][0]["n_prompt"].get<int>();
    if (std::string(ds) == "trec") EXPECT_EQ(n_prompt, plain) << "trec must not be wrapped in the chat template";
    else EXPECT_GT(n_prompt, plain + 4) << "qasper is wrapped in the chat template";
  }
  fs::remove_all(dir);
}

// Every run/compress knob that the paper's rows need has a spec key, and it reaches MethodOptions.
TEST(EvalKvMethodSpec, EveryKnobHasAKeyThatReachesTheOptions) {
  auto opts = [](const std::string& spec) {
    kv::CompressorFlags f = evalkv::parse_method_spec(spec).flags;
    f.budget = 128;
    return kv::make_compressor_options(f);
  };
  EXPECT_TRUE(opts("streamingllm:streaming-first=1").opts.streaming_keep_first);
  EXPECT_FALSE(opts("streamingllm").opts.streaming_keep_first);
  EXPECT_EQ(opts("h2o:h2o-rows=256").opts.h2o_rows, 256);
  EXPECT_TRUE(opts("h2o:h2o-official-mask=1").opts.h2o_official_mask);
  EXPECT_FALSE(opts("h2o").opts.h2o_official_mask);
  EXPECT_TRUE(opts("snapkv:snapkv-mean=1").opts.snapkv_mean_rows);
  const auto ea = opts("expected-attention:ea-n-future=64:ea-covariance=0:ea-vnorm=0:ea-epsilon=0.0001:ea-stat-rows=32");
  EXPECT_EQ(ea.opts.ea.n_future, 64);
  EXPECT_FALSE(ea.opts.ea.use_covariance);
  EXPECT_FALSE(ea.opts.ea.use_vnorm);
  EXPECT_DOUBLE_EQ(ea.opts.ea.epsilon, 1e-4);
  EXPECT_EQ(ea.ea_stat_rows, 32);
  const auto ea_default = opts("expected-attention");
  EXPECT_EQ(ea_default.opts.ea.n_future, 512);
  EXPECT_TRUE(ea_default.opts.ea.use_covariance);
  EXPECT_TRUE(ea_default.opts.ea.use_vnorm);
  EXPECT_EQ(opts("cake:decode-evict-every=4").decode_evict_every, 4);
  EXPECT_EQ(opts("random:seed=7").opts.seed, 7u);
  // `--kv-seed` takes any 64-bit seed and reaches the method through this key.
  EXPECT_EQ(opts("random:seed=18446744073709551615").opts.seed, 18446744073709551615ull);
  EXPECT_FALSE(opts("cake:decode-evict=0").opts.decode_eviction);
  EXPECT_TRUE(opts("snapkv:decode-evict=1").opts.decode_eviction);
  // The paper's rows as specs (KVCache-Factory's StreamingLLM, the official H2O prefill variant).
  const auto h2o = opts("h2o:h2o-rows=512:h2o-official-mask=1:window=32");
  EXPECT_EQ(h2o.opts.h2o_rows, 512);
  EXPECT_TRUE(h2o.opts.h2o_official_mask);

  // Unknown keys and bad values stay one-line errors naming the problem.
  for (const char* bad : {"snapkv:bogus=1", "h2o:h2o-rows=-3", "h2o:h2o-rows=2.5", "expected-attention:ea-n-future=0",
                          "expected-attention:ea-epsilon=-1", "streamingllm:streaming-first=yes", "cake:decode-evict-every=0",
                          "random:seed=-1", "random:seed=1.5", "random:seed=18446744073709551616"}) {
    try {
      opts(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_FALSE(msg.empty());
    }
  }
  try {
    opts("snapkv:bogus=1");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key 'bogus'"), std::string::npos) << e.what();
  }
}

// tappa calibrate writes the official raw-score layout: score_type "BI" / "q_similarity", each
// prune_order the layers by ascending score (ties by index), as Prune/compute_bi.py and
// compute_q_similarity.py write them.
TEST(PruneCalibrateFiles, OfficialRawScoreLayout) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const fs::path dir = temp_dir("calibrate");
  std::string text;
  for (int i = 0; i < 12; ++i) text += "The quick brown fox jumps over the lazy dog near the river bank. ";
  std::ofstream(dir / "text.txt") << text;
  const std::string out = (dir / "scores.json").string();
  const std::string cmd = test::binary_dir() + "/tappa calibrate -m " + test::default_model() + " -t 2 -q -f " +
                          (dir / "text.txt").string() + " --window 16 --stride 16 -o " + out + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const struct {
    const char* file;
    const char* score_type;
  } expect[] = {{"scores.bi.json", "BI"}, {"scores.qsim.json", "q_similarity"}};
  for (const auto& e : expect) {
    SCOPED_TRACE(e.file);
    const nlohmann::json j = nlohmann::json::parse(test::slurp(dir / e.file));
    EXPECT_EQ(j.at("score_type"), e.score_type);
    const auto scores = j.at("scores").get<std::vector<double>>();
    const auto order = j.at("prune_order").get<std::vector<int>>();
    ASSERT_EQ(order.size(), scores.size());
    for (size_t i = 1; i < order.size(); ++i) {
      const double a = scores[order[i - 1]], b = scores[order[i]];
      EXPECT_TRUE(a < b || (a == b && order[i - 1] < order[i])) << "prune_order is not ascending at " << i;
    }
    // The official files' settings at the top level.
    EXPECT_EQ(j.at("max_seq_len"), 16);
    EXPECT_EQ(j.at("stride"), 16);
  }
  // The combined file holds both under its own keys; the official files read as score files too.
  EXPECT_EQ(prune::parse_scores_text(test::slurp(dir / "scores.json"), "qsim").size(),
            prune::parse_scores_text(test::slurp(dir / "scores.qsim.json"), "qsim").size());
  // A q-similarity file's prune_order is a sort of q-sim, not a pruning order: refused as --order.
  EXPECT_THROW(prune::parse_order_text(test::slurp(dir / "scores.qsim.json")), Error);
  EXPECT_NO_THROW(prune::parse_order_text(test::slurp(dir / "scores.bi.json")));
  fs::remove_all(dir);
}

}  // namespace
