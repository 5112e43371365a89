// tappa compress — run a prompt through the engine with a KV-compression method and show, per layer
// and KV head, the budget given, the tokens kept, q-similarity, preference and the bytes held before
// and after; optionally time decoding with the compressed cache against the full one.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/generate.h"

namespace tappa::cli {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

constexpr double kMiB = 1048576.0;

// The record as the library writes it (include/tappa/kv.h), as a JSON value to embed.
nlohmann::json record_json(const KvRecord& r, bool heads) { return nlohmann::json::parse(to_json(r, heads)); }

void print_table(std::FILE* out, const KvRecord& r, const ModelConfig& c, bool heads, const KvCacheFormat& f) {
  std::fprintf(out, "method %s (scorer %s, allocator %s%s%s), %d prompt tokens, budget C = %d tokens/layer "
                    "(ratio %.4f), window W = %d%s\n",
               r.method.c_str(), r.scorer.c_str(), r.allocator.c_str(), r.cascading ? ", cascading" : "",
               r.decode_eviction ? ", decode eviction" : "", r.n_prompt, r.capacity, r.ratio, r.window,
               r.compressed ? "" : "  -- nothing evicted (budget covers the prompt or skip rule)");
  if (!r.skipped_reason.empty()) std::fprintf(out, "not compressed: %s\n", r.skipped_reason.c_str());
  std::fprintf(out, "%5s %4s %7s %7s %8s %9s %12s %12s\n", "layer", "kv", "budget", "kept", "q-sim", "pref",
               "bytes before", "bytes after");
  for (const KvLayerRecord& l : r.layers) {
    if (!l.active) {
      std::fprintf(out, "%5d %4s %7s\n", l.layer, "*", "skipped");
      continue;
    }
    std::fprintf(out, "%5d %4s %7d %7d %8.4f %9.5f %12zu %12zu\n", l.layer, "*", l.budget, l.kept, l.qsim, l.preference,
                 l.bytes_before, l.bytes_after);
    if (!heads) continue;
    for (size_t h = 0; h < l.heads.size(); ++h) {
      const KvHeadRecord& hr = l.heads[h];
      std::fprintf(out, "%5d %4zu %7d %7d %8.4f %9.5f %12zu %12zu\n", l.layer, h, hr.budget, hr.kept, hr.qsim,
                   hr.preference, hr.bytes_before, hr.bytes_after);
    }
  }
  size_t before = 0, after = 0;
  int64_t kept = 0;
  for (const KvLayerRecord& l : r.layers) {
    before += l.bytes_before;
    after += l.bytes_after;
    kept += l.kept;
  }
  const size_t row = kv_row_bytes(f.k, c.head_dim) + kv_row_bytes(f.v, c.head_dim);  // one token's K + V in one list
  const size_t budget_bytes = static_cast<size_t>(r.capacity) * c.n_layer * c.n_head_kv * row;
  std::fprintf(out, "total: %lld tokens kept over %d layers x %d KV heads (%.1f per list); lists %.3f MiB -> %.3f MiB\n",
               static_cast<long long>(kept), c.n_layer, c.n_head_kv,
               static_cast<double>(kept) / std::max(1, c.n_layer * c.n_head_kv), before / kMiB, after / kMiB);
  std::fprintf(out,
               "KvCache::bytes_held: before %zu (%.3f MiB), after %zu (%.3f MiB), factor %.4f; expected from the "
               "final budgets %zu (%.3f MiB), C*L*H_kv*(K+V row: %zu B, %s) = %zu (%.3f MiB)\n",
               r.bytes_held_before, r.bytes_held_before / kMiB, r.bytes_held_after, r.bytes_held_after / kMiB,
               r.bytes_held_before ? static_cast<double>(r.bytes_held_after) / r.bytes_held_before : 1.0,
               r.bytes_expected, r.bytes_expected / kMiB, row, kv_format_name(f).c_str(), budget_bytes, budget_bytes / kMiB);
  std::fprintf(out, "peak during prefill: %.3f MiB held (compressed layers + the layer being computed; rows: %.3f MiB)\n",
               r.bytes_held_peak / kMiB, r.bytes_peak_layerwise / kMiB);
}

}  // namespace

void register_compress(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("compress",
                                 "Compress the KV cache of a prompt with a method (TAPPA, CAKE, SnapKV, ...) and show "
                                 "what every layer and KV head kept");
  cmd->footer("Columns: budget = tokens the list may keep (window included), kept = tokens it holds, q-sim = window "
              "q-similarity\n(last W post-RoPE queries; per KV head: mean over its query group), pref = the layer's "
              "allocator preference\n(tappa-head: the head's), bytes = memory the list holds before / after.\n"
              "With --decode N, decoding is timed with the compressed cache and with the full one (same process,\n"
              "alternating, --repeat times; medians).\n\n"
              "Examples:\n"
              "  tappa compress -f essay.txt --max-tokens 4096 -c 4300 --kv tappa --budget 256\n"
              "  tappa compress -f essay.txt --kv snapkv --ratio 0.75 --json out.json\n"
              "  tappa compress -f essay.txt --max-tokens 4096 -c 4300 --kv tappa --budget 256 --decode 128 --repeat 3\n\n" +
              kv_methods_help());
  struct Opts {
    std::string model, prompt, file, json;
    int max_tokens = 0, threads = 0, ctx = 0, batch = 512, decode = 0, repeat = 1;
    bool no_bos = false, no_heads = false, show_text = false;
    KvFlags kv;
    CacheTypeFlags cache;
  };
  auto o = std::make_shared<Opts>();
  o->kv.method = "tappa";
  add_model_option(*cmd, o->model);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  cmd->add_option("-f,--file", o->file, "Read the prompt from a file");
  cmd->add_option("--max-tokens", o->max_tokens, "Keep only the first N tokens of the text (0: all)")
      ->capture_default_str()->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--ctx-size", o->ctx, "Context size (0: prompt + decode tokens)")
      ->capture_default_str()->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-b,--batch-size", o->batch, "Prompt tokens per forward batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--decode", o->decode, "Greedy tokens to decode, timed with the compressed and with the full cache")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--repeat", o->repeat, "Repetitions of the prefill (+ decode) timing; medians are reported")
      ->capture_default_str()->check(CLI::Range(1, 100));
  cmd->add_option("--json", o->json, "Write the record as JSON to this file ('-': stdout instead of the table)");
  cmd->add_flag("--no-heads", o->no_heads, "One line per layer only");
  cmd->add_flag("--no-bos", o->no_bos, "Do not add the BOS token");
  cmd->add_flag("--show-text", o->show_text, "Print the greedy continuations (compressed and full) with --decode");
  add_kv_flags(*cmd, o->kv);
  add_cache_type_flags(*cmd, o->cache);

  cmd->callback([o, &rc] {
    const KvOptions kv_opts = o->kv.options();
    validate_kv_options(kv_opts);
    const std::string text = read_prompt(o->prompt, o->file);
    const auto model = Model::load(o->model);
    const ModelConfig& c = model->config();
    std::vector<int32_t> tokens = model->tokenizer().encode(text, !o->no_bos, false);
    if (o->max_tokens > 0 && static_cast<int>(tokens.size()) > o->max_tokens) tokens.resize(o->max_tokens);
    if (tokens.size() < 2) throw Error("the prompt must have at least 2 tokens (give text with -p or -f)");
    const int N = static_cast<int>(tokens.size());

    EngineOptions eo;
    eo.n_threads = o->threads;
    eo.n_ctx = o->ctx > 0 ? o->ctx : N + o->decode + 1;
    eo.n_batch = o->batch;
    eo.cache = cache_type_from_flags(o->cache);
    if (N + o->decode > eo.n_ctx)
      throw Error("prompt (" + std::to_string(N) + " tokens) plus " + std::to_string(o->decode) +
                  " to decode exceeds the context of " + std::to_string(eo.n_ctx) + " tokens (raise -c/--ctx-size)");

    kv_capacity(*model, kv_opts, N);  // a budget the prompt cannot use fails before the engine is made
    Engine engine(model, eo);
    // Both runs are the library's generation (include/tappa/generate.h): greedy, --decode tokens
    // whatever they are (no end-of-generation stop), the compressed one with the method's compressor
    // attached even for fullkv (its record: q-sim and bytes per layer and head).
    GenerateOptions go;
    go.max_tokens = o->decode;
    go.ignore_eos = true;
    go.kv = kv_opts;
    go.kv_record_always = true;
    GenerateOptions go_full = go;  // the reference for --decode: the same prompt, uncompressed
    go_full.kv = KvOptions{};
    go_full.kv_record_always = false;

    std::vector<double> t_prefill, t_prefill_full, t_compress, tps, tps_full;
    std::vector<int32_t> gen, gen_full;
    // Tokens per second of the o->decode − 1 timed forward passes (the first token comes from the
    // prefill's logits).
    const auto decode_tps = [&](const GenerateResult& g) {
      return o->decode > 1 && g.generate_seconds > 0 ? (o->decode - 1) / g.generate_seconds : 0.0;
    };
    KvRecord rec;
    size_t full_bytes_after_decode = 0, comp_bytes_after_decode = 0, full_bytes_after_prefill = 0;
    for (int r = 0; r < o->repeat; ++r) {
      auto run_compressed = [&] {
        const GenerateResult g = generate(engine, tokens, go);
        if (!g.kv) throw Error("internal: the compressed run has no KV record");
        rec = *g.kv;
        t_prefill.push_back(g.prompt_seconds);  // kvzip's replay and eviction included
        t_compress.push_back(rec.t_total());
        if (o->decode > 0) {
          tps.push_back(decode_tps(g));
          gen = g.tokens;
          comp_bytes_after_decode = g.kv_bytes_held;
        }
      };
      auto run_full = [&] {
        if (o->decode <= 0) return;
        const GenerateResult g = generate(engine, tokens, go_full);
        t_prefill_full.push_back(g.prompt_seconds);
        full_bytes_after_prefill = g.kv_bytes_after_prompt;
        tps_full.push_back(decode_tps(g));
        gen_full = g.tokens;
        full_bytes_after_decode = g.kv_bytes_held;
      };
      // Alternate the order so that drift on a shared machine hits both alike.
      if (r % 2 == 0) {
        run_compressed();
        run_full();
      } else {
        run_full();
        run_compressed();
      }
    }

    const double pre = median(t_prefill), comp = median(t_compress);
    nlohmann::json j;
    j["model"] = o->model;
    j["n_layer"] = c.n_layer;
    j["n_head_kv"] = c.n_head_kv;
    j["head_dim"] = c.head_dim;
    j["kv_format"] = kv_format_name(engine.cache_format());
    j["threads"] = engine.n_threads();
    j["repeat"] = o->repeat;
    j["record"] = record_json(rec, !o->no_heads);
    j["prefill_s"] = t_prefill;
    j["compress_s"] = t_compress;
    j["prefill_s_median"] = pre;
    j["compress_s_median"] = comp;
    j["compress_fraction_of_prefill"] = pre > 0 ? comp / pre : 0.0;
    if (o->decode > 0) {
      j["decode_tokens"] = o->decode;
      j["prefill_full_s"] = t_prefill_full;
      j["decode_tps"] = tps;
      j["decode_tps_full"] = tps_full;
      j["decode_tps_median"] = median(tps);
      j["decode_tps_full_median"] = median(tps_full);
      j["bytes_held_full_after_prefill"] = full_bytes_after_prefill;
      j["bytes_held_after_decode"] = comp_bytes_after_decode;
      j["bytes_held_after_decode_full"] = full_bytes_after_decode;
      const Tokenizer& tok = model->tokenizer();
      std::string a, b;
      for (int32_t t : gen) a += tok.token_to_piece(t);
      for (int32_t t : gen_full) b += tok.token_to_piece(t);
      j["text"] = a;
      j["text_full"] = b;
      int same = 0;
      while (same < static_cast<int>(std::min(gen.size(), gen_full.size())) && gen[same] == gen_full[same]) ++same;
      j["same_prefix_tokens"] = same;
    }

    const bool json_stdout = o->json == "-";
    if (!o->json.empty() && !json_stdout) {
      std::ofstream f(o->json);
      if (!f) throw Error(o->json + ": cannot write");
      f << j.dump(1) << "\n";
    }
    if (json_stdout) {
      std::printf("%s\n", j.dump(1).c_str());
    } else {
      print_table(stdout, rec, c, !o->no_heads, engine.cache_format());
      std::printf("prefill %.3f s (median of %d), compression %.2f ms (scoring %.2f, eviction %.2f%s) = %.2f%% of the "
                  "prefill\n",
                  pre, o->repeat, comp * 1e3, rec.t_score * 1e3, rec.t_evict * 1e3,
                  rec.h2o_from_engine_rows
                      ? (", summing the engine's attention rows " + std::to_string(rec.t_observe * 1e3) + " ms").c_str()
                      : "",
                  pre > 0 ? 100.0 * comp / pre : 0.0);
      if (o->decode > 0) {
        std::printf("decode %d tokens: compressed %.2f tok/s, full %.2f tok/s (medians of %d; speed-up x%.3f); "
                    "full-cache prefill %.3f s\n",
                    o->decode, median(tps), median(tps_full), o->repeat,
                    median(tps_full) > 0 ? median(tps) / median(tps_full) : 0.0, median(t_prefill_full));
        std::printf("uncompressed engine: %.3f MiB held after the prefill (measured)\n", full_bytes_after_prefill / kMiB);
        std::printf("bytes held after decoding: compressed %.3f MiB, full %.3f MiB; decode eviction %lld rows in "
                    "%.2f ms; greedy tokens equal to the full run's: first %d of %d\n",
                    comp_bytes_after_decode / kMiB, full_bytes_after_decode / kMiB,
                    static_cast<long long>(rec.decode_evicted), rec.t_decode * 1e3,
                    j["same_prefix_tokens"].get<int>(), o->decode);
        if (o->show_text) {
          std::printf("--- compressed:\n%s\n--- full:\n%s\n", j["text"].get<std::string>().c_str(),
                      j["text_full"].get<std::string>().c_str());
        }
      }
    }
    rc = 0;
  });
}

}  // namespace tappa::cli
