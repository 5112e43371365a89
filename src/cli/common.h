// Pieces shared by the subcommands: the default model path, reading prompt text, formatting.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "tappa/kv.h"
#include "tappa/kv_cache.h"

namespace tappa::cli {

// The model used when -m is not given: $TAPPA_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf
// in the current directory, else next to the executable's parent folder (build/../models).
std::string default_model_path();

// Adds -m/--model with the default above.
CLI::Option* add_model_option(CLI::App& app, std::string& path);

// A number in [lo, hi]: like CLI::Range, which lets NaN through (every comparison with NaN is false),
// but NaN is refused too ("Value nan not in range ...").
CLI::Validator finite_range(double lo, double hi);

// The text given by -p or read from -f (exactly one must be set). Throws tappa::Error.
std::string read_prompt(const std::string& prompt, const std::string& file);
std::string read_file(const std::string& path);

// A --resume checkpoint of a long command: parses `path` and checks it was written with `settings`.
// Throws tappa::Error naming the file, and `which` (the flags that make up the settings) on a mismatch.
nlohmann::json read_checkpoint(const std::string& path, const nlohmann::json& settings, const std::string& which);

// KV-compression flags (run, compress, bench): --kv METHOD (a preset, a SCORER+ALLOCATOR pairing or a
// whole spec string), --budget / --ratio, and one flag per spec knob (--kv-window is the spec's
// window, --alpha its alpha, …). The knob flags become the spec's key=value parts, so a flag and the
// spec key of the same name are one setting, parsed and checked once, by the library (include/tappa/kv.h).
struct KvFlags {
  std::string method = "fullkv";
  std::optional<int> budget;
  std::optional<double> ratio;
  std::vector<std::pair<std::string, std::string>> knobs;  // (spec key, value), in the order given
  // The spec "METHOD:key=value:…" with the budget. Throws tappa::Error on a value holding ':' (it
  // would split the spec).
  KvOptions options() const;
};
void add_kv_flags(CLI::App& cmd, KvFlags& f);
std::string kv_methods_help();

// K/V cache storage flags (cmd_run.cpp; run, compress, bench, eval-kv): --cache-type-k / -ctk,
// --cache-type-v / -ctv (f32, f16, bf16, q8_0, q4_0, as llama.cpp's) and --kv-rotation auto|on|off.
struct CacheTypeFlags {
  std::string k, v;             // empty: the default (kDefaultCacheType)
  std::string rotation = "auto";
};
void add_cache_type_flags(CLI::App& cmd, CacheTypeFlags& f);
// The cache type the flags ask for (validated names; the model check happens in the engine).
tappa::KvCacheType cache_type_from_flags(const CacheTypeFlags& f);
// llama.cpp's multi-letter short flags (-ctk, -ctv), which CLI11 cannot declare, as their long names.
void rewrite_llama_aliases(int argc, char** argv, std::vector<std::string>& storage, std::vector<char*>& out);

// Subcommand registration; each returns the exit code through the callback's result.
void register_info(CLI::App& app, int& rc);
void register_run(CLI::App& app, int& rc);
void register_tokenize(CLI::App& app, int& rc);
void register_bench(CLI::App& app, int& rc);
void register_analyze(CLI::App& app, int& rc);
void register_compress(CLI::App& app, int& rc);
void register_eval_kv(CLI::App& app, int& rc);
void register_calibrate(CLI::App& app, int& rc);
void register_prune_order(CLI::App& app, int& rc);
void register_prune(CLI::App& app, int& rc);
void register_eval_mc(CLI::App& app, int& rc);
void register_ppl(CLI::App& app, int& rc);
void register_serve(CLI::App& app, int& rc);

}  // namespace tappa::cli
