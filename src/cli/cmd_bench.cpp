// tappa bench — prompt processing (ppN) and generation (tgN) speed with llama-bench's conventions:
// random tokens, one warm-up run per test, `-r` timed repetitions, tokens/s mean ± sd; `-d` fills
// the cache to a depth first (untimed). JSON output uses llama-bench's field names so the two can be
// compared by one script (bench/compare.sh). With `--kv METHOD --budget C` the depth context is
// compressed (the prefill's compression, untimed, as the prompt of a real run would be) and tgN is
// then measured on the compressed cache, with the method's decode eviction if it has one. With
// `--batch N` tgN decodes N sequences together (Engine::decode) and reports the aggregate rate.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "tappa/cpu.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/kv.h"

namespace tappa::cli {

namespace {

struct Result {
  std::string test;
  int n_prompt = 0, n_gen = 0, n_depth = 0;
  int n_seqs = 1;       // sequences decoding together (tg); the figure is their aggregate
  std::vector<double> ts;
  std::string kv;       // "METHOD bC" when the depth context was compressed
  size_t kv_bytes = 0;  // bytes_held() of every sequence's cache after the last repetition (tg only)
  std::string label() const {
    return test + (n_seqs > 1 ? " x" + std::to_string(n_seqs) : "") + (n_depth ? " @ d" + std::to_string(n_depth) : "") +
           (kv.empty() ? "" : " kv " + kv);
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
      "Defaults: -p 512 -n 128 -r 5 -d 0 --batch 1, all threads. Tokens are random (as llama-bench's); each\n"
      "test runs once untimed first. -d N fills the cache with N tokens before every repetition (untimed).\n"
      "--batch N1,N2,...: tgN with N sequences decoding together (one forward pass per step for all of them;\n"
      "the figure is the aggregate: N * tokens / s), each with its own cache filled to -d tokens.\n\n"
      "Examples:\n"
      "  tappa bench -t 2 -p 512 -n 128 -r 5 -o json\n"
      "  tappa bench -t 2 -d 4096 -p 0 -n 128                        # generation at depth 4096\n"
      "  tappa bench -t 2 -d 4096 -p 0 -n 128 --kv tappa --budget 256 # the same, depth context compressed\n"
      "  tappa bench -t 2 -p 0 -n 128 --batch 1,4,16                 # aggregate decode over 1, 4, 16 sequences\n\n"
      "With --kv the depth context (-d, required) of every sequence is compressed after it is filled (untimed)\n"
      "and tgN runs on the compressed caches (with the method's decode eviction); -p must be 0.\n\n" +
      kv_methods_help());
  struct Opts {
    std::string model, output = "md", backend = "cpu", random_shape;
    int threads = 0, n_prompt = 512, n_gen = 128, reps = 5, depth = 0, batch = 512;
    bool share_depth = false;
    std::vector<int> n_seqs{1};
    KvFlags kv;
    CacheTypeFlags cache;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens for the pp test (0: skip)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-n,--n-gen", o->n_gen, "Generated tokens for the tg test (0: skip)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-r,--repetitions", o->reps, "Timed repetitions per test")->capture_default_str()->check(CLI::Range(1, 1000));
  cmd->add_option("-d,--n-depth", o->depth, "Tokens already in the cache before each test")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("-b,--batch-size", o->batch, "Prompt tokens per forward batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--batch", o->n_seqs, "Sequences decoding together for tgN, e.g. 1,4,16 (aggregate tokens/s)")
      ->delimiter(',')->check(CLI::Range(1, 4096));
  cmd->add_option("-o,--output", o->output, "Output format: md or json")->capture_default_str()->check(CLI::IsMember({"md", "json"}));
  cmd->add_option("--backend", o->backend, "Backend: cpu, reference or cuda (a -DTAPPA_CUDA=ON build)")->capture_default_str();
  cmd->add_option("--random-weights", o->random_shape,
                  "Instead of -m: a model of this shape with random weights (llama-3.1-8b, qwen2.5-7b, smollm2-135m, "
                  "gemma3-270m, llama-tiny, qwen2-tiny, gemma3-tiny); with --backend cuda made on the GPU only");
  cmd->add_flag("--share-depth", o->share_depth,
                "Fill the depth context once (a real prefill, compressed by --kv) and give every sequence a copy "
                "(Sequence::fork) instead of restoring it from host bytes: fast for large batches on a GPU; the "
                "copies carry no KV policy, so no decode eviction (add --no-decode-evict with --kv)");
  add_kv_flags(*cmd, o->kv);
  add_cache_type_flags(*cmd, o->cache);
  cmd->callback([o, &rc] {
    const KvOptions kv_opts = o->kv.options();
    const KvMethodSummary kv_method = validate_kv_options(kv_opts);
    const bool use_kv = kv_method.compresses;
    if (use_kv && o->depth <= 0) throw Error("--kv compresses the depth context: give it with -d N (e.g. -d 4096)");
    if (use_kv && o->n_prompt > 0)
      throw Error("--kv measures generation on the compressed depth context only: add -p 0");
    if (o->n_seqs.empty()) throw Error("--batch needs at least one sequence count");
    if (use_kv && o->share_depth && kv_method.decode_eviction)
      throw Error("--share-depth gives the sequences copies without a KV policy: add --no-decode-evict");
    const std::shared_ptr<Model> model = o->random_shape.empty()
                                             ? Model::load(o->model)
                                             : Model::random(o->random_shape, 1, /*host_weights=*/o->backend != "cuda");
    const ModelConfig& c = model->config();
    EngineOptions eo;
    eo.backend = o->backend;
    eo.n_threads = o->threads;
    eo.n_batch = o->batch;
    eo.cache = cache_type_from_flags(o->cache);
    eo.n_ctx = o->depth + std::max(o->n_prompt, o->n_gen);
    if (eo.n_ctx <= 0) throw Error("nothing to measure: -p and -n are both 0");
    Engine engine(model, eo);
    uint64_t rng = 1234;
    const std::vector<int32_t> depth_tokens = random_tokens(o->depth, c.n_vocab, rng);
    const int capacity = use_kv ? kv_capacity(*model, kv_opts, o->depth) : 0;
    const KvOptions no_kv;
    // The depth context is computed once (uncompressed, with the query rows a method reads) and every
    // sequence of every repetition starts from that state (Sequence::restore), compressed by its own
    // compressor exactly as a prefill would compress it (PrefillSnapshot, include/tappa/kv.h): the same cache as filling
    // each sequence for real, without re-running thousands of prompt tokens per sequence.
    std::optional<PrefillSnapshot> depth;
    KvSequence shared;
    if (o->share_depth && o->depth >= 2) {
      shared = prefill_kv(engine, depth_tokens, use_kv ? kv_opts : no_kv);  // its forks carry no policy
      shared.sequence->cache().shrink_to_fit();
    } else if (o->depth >= 2) {
      if (use_kv) depth.emplace(engine, depth_tokens, kv_opts);
      else depth.emplace(engine, depth_tokens);
    }
    // Each sequence with its own compressor as its policy (decode eviction, if the method has one).
    auto fill = [&](int n) {
      std::vector<KvSequence> s;
      for (int i = 0; i < n; ++i) {
        if (shared.sequence) {
          s.push_back({nullptr, shared.sequence->fork()});
        } else if (depth) {
          s.push_back(depth->restore(engine, use_kv ? kv_opts : no_kv));
        } else {  // -d 0 or 1 (no --kv with -d 0)
          s.push_back(prefill_kv(engine, std::span<const int32_t>(depth_tokens), use_kv ? kv_opts : no_kv));
        }
      }
      return s;
    };
    auto time_pp = [&](const std::vector<int32_t>& toks) {
      std::vector<KvSequence> s = fill(1);
      const auto t0 = std::chrono::steady_clock::now();
      engine.eval(*s[0].sequence, toks);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    size_t kv_bytes = 0;
    std::vector<Engine::Step> steps;
    std::vector<int32_t> next;
    auto time_tg = [&](int n_gen, int n) {
      std::vector<KvSequence> s = fill(n);
      // Room for the generated rows before the clock starts (a cache then never grows while timed).
      for (const auto& q : s) q.sequence->cache().reserve_extra(n_gen);
      steps.assign(n, {});
      next.assign(n, c.n_vocab / 2);
      const auto t0 = std::chrono::steady_clock::now();
      for (int g = 0; g < n_gen; ++g) {
        // Greedy steps: the backend gives the argmax (a GPU keeps the logits on the device).
        for (int i = 0; i < n; ++i) steps[i] = {s[i].sequence.get(), std::span<const int32_t>(&next[i], 1), false, true};
        engine.decode(steps);
        for (int i = 0; i < n; ++i) next[i] = s[i].sequence->greedy_token();
      }
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      kv_bytes = 0;
      for (const auto& q : s) kv_bytes += q.sequence->cache().bytes_held();
      return t;
    };

    std::vector<Result> results;
    if (o->n_prompt > 0) {
      Result r{"pp" + std::to_string(o->n_prompt), o->n_prompt, 0, o->depth, 1, {}, {}, 0};
      const auto toks = random_tokens(o->n_prompt, c.n_vocab, rng);
      time_pp(toks);  // warm-up
      for (int i = 0; i < o->reps; ++i) r.ts.push_back(o->n_prompt / time_pp(toks));
      results.push_back(r);
    }
    if (o->n_gen > 0) {
      {  // Warm-up (weights, pages, thread pool): a few steps of the largest batch from an empty cache.
        std::vector<std::unique_ptr<Sequence>> w;
        const int n = *std::max_element(o->n_seqs.begin(), o->n_seqs.end());
        for (int i = 0; i < n; ++i) w.push_back(engine.new_sequence());
        std::vector<int32_t> t(n, c.n_vocab / 2);
        for (int g = 0; g < std::min(o->n_gen, 8); ++g) {
          steps.clear();
          for (int i = 0; i < n; ++i) steps.push_back({w[i].get(), std::span<const int32_t>(&t[i], 1)});
          engine.decode(steps);
        }
      }
      for (int n : o->n_seqs) {
        Result r{"tg" + std::to_string(o->n_gen), 0, o->n_gen, o->depth, n, {}, {}, 0};
        if (use_kv) r.kv = o->kv.method + " b" + std::to_string(capacity);
        for (int i = 0; i < o->reps; ++i) r.ts.push_back(static_cast<double>(n) * o->n_gen / time_tg(o->n_gen, n));
        r.kv_bytes = kv_bytes;
        results.push_back(r);
      }
    }

    if (o->output == "json") {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& r : results)
        j.push_back({{"test", r.label()},
                     {"model_filename", o->random_shape.empty() ? o->model : "random:" + o->random_shape},
                     {"backend", engine.backend_name()}, {"cpu_variant", cpu_kernel_variant()}, {"n_threads", engine.n_threads()}, {"n_prompt", r.n_prompt},
                     {"type_k", kv_type_name(engine.cache_format().k)}, {"type_v", kv_type_name(engine.cache_format().v)},
                     {"kv_format", kv_format_name(engine.cache_format())},
                     {"n_gen", r.n_gen}, {"n_depth", r.n_depth}, {"n_seqs", r.n_seqs}, {"kv", r.kv},
                     {"kv_bytes_held", r.kv_bytes}, {"avg_ts", r.mean()}, {"stddev_ts", r.sd()}, {"samples_ts", r.ts}});
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("cpu kernels: %s\n\n", cpu_kernel_variant());
      std::printf("| model | threads | K/V | test | t/s |\n| --- | ---: | --- | --- | ---: |\n");
      for (const auto& r : results)
        std::printf("| %s | %d | %s | %s | %.2f ± %.2f |\n", c.name.empty() ? c.arch_name.c_str() : c.name.c_str(),
                    engine.n_threads(), kv_format_name(engine.cache_format()).c_str(), r.label().c_str(), r.mean(), r.sd());
      for (const auto& r : results)
        if (r.kv_bytes > 0)
          std::printf("%s: KV cache held %.1f MiB per sequence (%s backend)\n", r.label().c_str(),
                      r.kv_bytes / double(r.n_seqs) / 1048576.0, engine.backend_name().c_str());
    }
    rc = 0;
  });
}

}  // namespace tappa::cli
