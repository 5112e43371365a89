// tappa bench — prompt processing (ppN) and generation (tgN) speed with llama-bench's conventions:
// random tokens, one warm-up run per test, `-r` timed repetitions, tokens/s mean ± sd; `-d` fills
// the cache to a depth first (untimed). JSON output uses llama-bench's field names so the two can be
// compared by one script (bench/compare.sh). With `--kv METHOD --budget C` the depth context is
// compressed once (the prefill's compression, untimed, as the prompt of a real run would be) and tgN is
// then measured on the compressed cache, with the method's decode eviction if it has one.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "kv/compressor.h"
#include "kv/kv_cache.h"
#include "tappa/engine.h"
#include "tappa/error.h"

namespace tappa::cli {

// Shared KV-compression flags (defined in cmd_run.cpp, as for `tappa compress`).
std::string kv_methods_help();
void add_kv_flags(CLI::App& cmd, kv::CompressorFlags& f);

namespace {

struct Result {
  std::string test;
  int n_prompt = 0, n_gen = 0, n_depth = 0;
  std::vector<double> ts;
  std::string kv;       // "METHOD bC" when the depth context was compressed
  size_t kv_bytes = 0;  // KvCache::bytes_held() after the last repetition (tg only)
  std::string label() const {
    return test + (n_depth ? " @ d" + std::to_string(n_depth) : "") + (kv.empty() ? "" : " kv " + kv);
  }
  double mean() const { return std::accumulate(ts.begin(), ts.end(), 0.0) / ts.size(); }
  double sd() const {
    if (ts.size() < 2) return 0.0;
    const double m = mean();
    double s = 0;
    for (double x : ts) s += (x - m) * (x - m);
    return std::sqrt(s / (ts.size() - 1));
  }
};

std::vector<int32_t> random_tokens(int n, int n_vocab, uint64_t& state) {
  std::vector<int32_t> t(n);
  for (auto& x : t) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(n_vocab));
  }
  return t;
}

}  // namespace

void register_bench(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("bench", "Measure prompt-processing and generation speed (llama-bench conventions)");
  cmd->footer(
      "Defaults: -p 512 -n 128 -r 5 -d 0, all threads. Tokens are random (as llama-bench's); each test runs\n"
      "once untimed first. -d N fills the cache with N tokens before every repetition (untimed).\n\n"
      "Examples:\n"
      "  tappa bench -t 2 -p 512 -n 128 -r 5 -o json\n"
      "  tappa bench -t 2 -d 4096 -p 0 -n 128                        # generation at depth 4096\n"
      "  tappa bench -t 2 -d 4096 -p 0 -n 128 --kv tappa --budget 256 # the same, depth context compressed\n\n"
      "With --kv the depth context (-d, required) is compressed once after it is filled (untimed) and\n"
      "tgN runs on the compressed cache (with the method's decode eviction); -p must be 0.\n\n" +
      kv_methods_help());
  struct Opts {
    std::string model, output = "md";
    int threads = 0, n_prompt = 512, n_gen = 128, reps = 5, depth = 0, batch = 512;
    kv::CompressorFlags kv;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens for the pp test (0: skip)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", o->n_gen, "Generated tokens for the tg test (0: skip)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-r,--repetitions", o->reps, "Timed repetitions per test")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("-d,--n-depth", o->depth, "Tokens already in the cache before each test")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-b,--batch-size", o->batch, "Prompt tokens per forward batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("-o,--output", o->output, "Output format: md or json")->capture_default_str()->check(CLI::IsMember({"md", "json"}));
  add_kv_flags(*cmd, o->kv);
  cmd->callback([o, &rc] {
    const kv::CompressorOptions kv_opts = kv::make_compressor_options(o->kv);
    const bool use_kv = kv_opts.method != "fullkv";
    if (use_kv && o->depth <= 0) throw Error("--kv compresses the depth context: give it with -d N (e.g. -d 4096)");
    if (use_kv && o->n_prompt > 0)
      throw Error("--kv measures generation on the compressed depth context only: add -p 0");
    const auto model = Model::load(o->model);
    const ModelConfig& c = model->config();
    EngineOptions eo;
    eo.n_threads = o->threads;
    eo.n_batch = o->batch;
    eo.n_ctx = o->depth + std::max(o->n_prompt, o->n_gen);
    if (eo.n_ctx <= 0) throw Error("nothing to measure: -p and -n are both 0");
    Engine engine(*model, eo);
    uint64_t rng = 1234;
    const std::vector<int32_t> depth_tokens = random_tokens(o->depth, c.n_vocab, rng);

    std::unique_ptr<kv::KvCompressor> compressor;
    if (use_kv) {
      compressor = std::make_unique<kv::KvCompressor>(*model, kv_opts);
      compressor->check(o->depth);
      engine.set_kv_policy(compressor.get());
    }
    auto fill_depth = [&] {
      engine.reset();
      if (o->depth <= 0) return;
      if (compressor) {
        if (Observer* ob = compressor->observer()) {  // h2o: sums the engine's attention rows
          engine.set_observer(ob);
          compressor->expect_prompt(o->depth);
        }
      }
      engine.eval(depth_tokens);
      engine.set_observer(nullptr);
    };
    auto time_pp = [&](const std::vector<int32_t>& toks) {
      fill_depth();
      const auto t0 = std::chrono::steady_clock::now();
      engine.eval(toks);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    auto time_tg = [&](int n) {
      fill_depth();
      int32_t tok[1] = {c.n_vocab / 2};
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        auto logits = engine.eval(tok);
        tok[0] = argmax(logits);
      }
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };

    std::vector<Result> results;
    if (o->n_prompt > 0) {
      Result r{"pp" + std::to_string(o->n_prompt), o->n_prompt, 0, o->depth, {}, {}, 0};
      const auto toks = random_tokens(o->n_prompt, c.n_vocab, rng);
      time_pp(toks);  // warm-up
      for (int i = 0; i < o->reps; ++i) r.ts.push_back(o->n_prompt / time_pp(toks));
      results.push_back(r);
    }
    if (o->n_gen > 0) {
      Result r{"tg" + std::to_string(o->n_gen), 0, o->n_gen, o->depth, {}, {}, 0};
      if (compressor) r.kv = o->kv.method + " b" + std::to_string(compressor->capacity_for(o->depth));
      // Warm-up (weights, pages, thread pool) from an empty cache: at depth a second fill would double the
      // run time for nothing, and the decode kernels are the same.
      engine.set_kv_policy(nullptr);
      {
        engine.reset();
        int32_t tok[1] = {c.n_vocab / 2};
        for (int i = 0; i < std::min(o->n_gen, 16); ++i) tok[0] = argmax(engine.eval(tok));
      }
      engine.set_kv_policy(compressor.get());
      for (int i = 0; i < o->reps; ++i) r.ts.push_back(o->n_gen / time_tg(o->n_gen));
      r.kv_bytes = engine.kv_cache().bytes_held();
      results.push_back(r);
    }

    if (o->output == "json") {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& r : results)
        j.push_back({{"test", r.label()},
                     {"model_filename", o->model}, {"n_threads", engine.n_threads()}, {"n_prompt", r.n_prompt},
                     {"n_gen", r.n_gen}, {"n_depth", r.n_depth}, {"kv", r.kv}, {"kv_bytes_held", r.kv_bytes},
                     {"avg_ts", r.mean()}, {"stddev_ts", r.sd()}, {"samples_ts", r.ts}});
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("| model | threads | test | t/s |\n| --- | ---: | --- | ---: |\n");
      for (const auto& r : results)
        std::printf("| %s | %d | %s | %.2f ± %.2f |\n", c.name.empty() ? c.arch_name.c_str() : c.name.c_str(),
                    engine.n_threads(), r.label().c_str(), r.mean(), r.sd());
    }
    rc = 0;
  });
}

}  // namespace tappa::cli
