// The eval-kv grid: every (task, length, sample, mode) × (method, budget) cell, run on one model.
//
// Cost. Compression happens after the prompt's forward pass (the engine runs a prompt layer by layer
// and the policy cuts layer l once it holds the whole prompt), so the prompt's hidden states, its
// last logits and the uncompressed K/V are the same for every method. The runner therefore prefills
// each sample once with a capturing policy (full cache + the query rows the methods read), and for
// each cell rebuilds that state — an engine advanced to the prompt's length with every layer skipped,
// its cache overwritten with the captured one — and hands the captured layers to a fresh
// KvCompressor through the same KvPolicy hooks the engine calls. A test checks this path against the
// engine's own (same kept rows, same logits). Only the question and decoding run per cell.
//
// Robustness. After every cell (at most once a second, and always at the end of a sample and when
// stopping) the results are written atomically; --resume skips the cells already there (the config
// must match); SIGINT/SIGTERM finish the current cell, write, and return.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kv/compressor.h"
#include "tappa/kv_cache.h"

namespace tappa {
class Model;
}

namespace tappa::evalkv {

// "name[:key=value]…", e.g. "tappa:alpha=1", "snapkv:window=16:pool=max7". Keys (each a
// CompressorFlags knob, the same as the run/compress flag of that name): alpha, window, gamma, pool,
// cascading, decode-evict, decode-evict-every, n-sink, streaming-first, h2o-rows, h2o-official-mask,
// snapkv-mean, pyramid-beta, tau, min-head-frac, ea-n-future, ea-covariance, ea-vnorm, ea-epsilon,
// ea-stat-rows, seed (booleans: 0 or 1). An unknown key is a one-line error. The label is the spec as
// written (it names the row in every table).
struct MethodSpec {
  std::string label;
  kv::CompressorFlags flags;
  bool is_full() const { return flags.method == "fullkv"; }
};
MethodSpec parse_method_spec(std::string_view spec);

std::vector<std::string> split_list(std::string_view s, char sep = ',');

// A KV cache storage spec of the --cache-types axis: "TYPE" (K and V), "K/V" (e.g. "q8_0/f16"), with
// an optional ":rot=auto|on|off" (default auto). Types: f32, f16, bf16, q8_0, q4_0.
KvCacheType parse_cache_spec(std::string_view spec);

struct GridConfig {
  std::string model_path;
  std::string data_dir;
  std::vector<MethodSpec> methods;      // fullkv is added first if missing (the reference)
  std::vector<int> budgets;             // tokens per layer, window included
  std::vector<std::string> tasks;       // ruler names, longbench_<dataset>, longbench:PATH, fidelity_*
  std::vector<int> lengths;             // prompt tokens
  std::vector<std::string> modes;       // query-aware, query-agnostic
  int samples = 3;
  uint64_t seed = 0;
  int fidelity_tokens = 64;             // M: teacher-forced continuation
  int greedy_tokens = 32;               // G: greedy agreement horizon
  int longbench_max_new = 64;           // cap on LongBench generation lengths
  bool longbench_chat = true;           // LongBench prompts in the model's chat template (if it has one)
  int threads = 0;
  // K/V storage axis: every method × budget runs on every cache type listed (the prompt is prefilled
  // once per type, since its own attention reads that cache). The fidelity reference is always the
  // fp32 full cache, so fullkv on a type measures what the type alone costs. A cell's method label is
  // "METHOD@TYPE" for any type but f32 (so tables and resume keys of f32-only runs stay as they were).
  std::vector<std::string> cache_types{"f32"};
  nlohmann::json to_json() const;       // the parts that define the results (threads excluded)
};

// Total cells of the grid.
int64_t grid_size(const GridConfig& cfg);

// The grid in the order run_grid runs it: every cell's key (cell_key), and for each cell the index of
// its group — one (task, length, sample, mode), whose prompt is prefilled once for all its cells.
// fullkv is counted as run_grid adds it.
struct GridOrder {
  std::vector<std::string> keys;
  std::vector<int64_t> group;  // [cell] group index
  int64_t n_groups = 0;
};
GridOrder grid_order(const GridConfig& cfg);

// Runs the cells that `results["cells"]` does not hold yet, appending each. `checkpoint` is called
// with the whole results object whenever they should be written. Returns false when stopped early
// (stop_requested()). With `owns_group`, only the groups g (grid_order's indices) with owns_group(g)
// run (the ranks of `mpirun tappa eval-kv` split the grid by group, so each prefill happens once);
// `current`, if given, names what is running (a group, then each cell's key) for error reports.
bool run_grid(const Model& model, const GridConfig& cfg, nlohmann::json& results,
              const std::function<void(const nlohmann::json&, bool force)>& checkpoint, bool progress = true,
              const std::function<bool(int64_t group)>& owns_group = {}, std::string* current = nullptr);

// The key that identifies a cell in the results ("task|length|sample|mode|method|budget").
std::string cell_key(const nlohmann::json& cell);

}  // namespace tappa::evalkv
