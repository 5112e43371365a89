// Evaluation through the public API: perplexity as llama-perplexity computes it, zero-shot
// multiple-choice accuracy as lm-evaluation-harness scores it, and the eval-kv grid (KV-compression
// methods × budgets over long-context tasks and fidelity to the full cache). These are what
// `tappa ppl`, `eval-mc` and `eval-kv` are made of; the CLI adds flags, checkpoints, MPI sharding
// and printing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tappa/control.h"
#include "tappa/engine.h"
#include "tappa/model.h"
#include "tappa/tokenizer.h"

namespace tappa::eval {

// ---- Perplexity
// Perplexity the way llama.cpp's llama-perplexity computes it (its default mode): the text is
// tokenised whole (with BOS when the model adds one), cut into non-overlapping chunks of n_ctx
// tokens, the first token of each chunk is replaced by BOS (when the model uses one), every chunk is
// evaluated from an empty cache, and only the second half is scored — token j+1 from the logits at
// position j for j = n_ctx/2 … n_ctx−2 — so every scored token has at least n_ctx/2 tokens of context.
// PPL = exp(mean NLL); the ± is llama-perplexity's: PPL · sqrt(var(NLL)/(N−1)).

struct ChunkNll {
  double nll_sum = 0;   // Σ −log p over the chunk's scored tokens
  double nll2_sum = 0;  // Σ (−log p)²
  int64_t count = 0;
};

struct PplSummary {
  double ppl = 0, ppl_stderr = 0;
  double mean_nll = 0;
  int64_t n_scored = 0;
  int n_chunks = 0;
};

// How many whole chunks the tokens give, capped by max_chunks (< 0: no cap). Throws tappa::Error
// when n_ctx < 4 or there are fewer than 2·n_ctx tokens (llama-perplexity's own requirement).
int count_chunks(int64_t n_tokens, int n_ctx, int max_chunks);

// Scores chunk `index` (tokens [index·n_ctx, (index+1)·n_ctx)). `bos` < 0: keep the first token.
ChunkNll score_chunk(Engine& engine, Sequence& seq, std::span<const int32_t> tokens, int index, int n_ctx, int32_t bos);

PplSummary summarise(std::span<const ChunkNll> chunks);

// ---- Multiple-choice tasks
// Multiple-choice tasks as lm-evaluation-harness poses them to a language model, loaded from the
// offline copies in ../shared/data (see its README). Every loader is a pure function of the file
// text: no I/O, no global state, and every malformed line is one tappa::Error naming the task and
// the line — so a fuzzer can drive them directly.
//
// Each choice is a (context, continuation) pair; the model scores log P(continuation | context).
//   PIQA          "Question: {goal}\nAnswer:" + " {sol}"                         acc_norm
//   ARC-E / ARC-C "Question: {stem}\nAnswer:" + " {choice text}"                 acc_norm
//   WinoGrande    "{sentence up to the blank, option filled in}" + " {rest}"      acc (partial scoring:
//                 only the words after the blank are scored, under each option's context)
//   HellaSwag     "{activity}: {ctx}" + " {ending}" (llama.cpp's 6-line format)   acc_norm
// acc_norm divides each log-likelihood by the byte length of the choice text (lm-eval's
// "completion_len"; identical to characters for ASCII text).

struct McChoice {
  std::string context;
  std::string continuation;
  size_t norm_len = 1;  // length used by acc_norm
};

struct McItem {
  std::vector<McChoice> choices;
  int gold = 0;
};

enum class McTask { piqa, arc_easy, arc_challenge, winogrande, hellaswag };

std::string_view task_name(McTask t);   // "piqa", "arc_easy", "arc_challenge", "winogrande", "hellaswag"
McTask parse_task_name(std::string_view name);  // throws tappa::Error listing the valid names
// The metric the paper reports for the task: acc_norm, except WinoGrande (acc).
bool task_uses_acc_norm(McTask t);

// PIQA: valid.jsonl ({"goal","sol1","sol2"} per line) and valid-labels.lst (0/1 per line).
std::vector<McItem> parse_piqa(std::string_view jsonl, std::string_view labels);
// ARC (Easy or Challenge): {"question": {"stem", "choices": [{"text","label"}]}, "answerKey"}.
std::vector<McItem> parse_arc(std::string_view jsonl);
// WinoGrande, MosaicML's conversion: {"context_options": [a, b], "continuation", "gold"}.
std::vector<McItem> parse_winogrande(std::string_view jsonl);
// HellaSwag in llama.cpp's format: 6 lines per item (context, gold 0–3, four endings).
std::vector<McItem> parse_hellaswag(std::string_view text);

// ---- Multiple-choice scoring
// Zero-shot multiple-choice scoring by log-likelihood (lm-evaluation-harness conventions): each
// choice's continuation is scored under its context; acc picks the highest log-likelihood, acc_norm
// the highest log-likelihood per byte of choice text; ties go to the first choice (numpy argmax).

// Log-likelihood of every choice of the item, in order.
std::vector<double> score_item(Engine& engine, const Tokenizer& tok, const McItem& item);

// Index chosen by acc (norm = false) or acc_norm (norm = true).
int predicted_choice(const McItem& item, std::span<const double> logliks, bool norm);

struct McSummary {
  int n = 0;
  double acc = 0, acc_stderr = 0;
  double acc_norm = 0, acc_norm_stderr = 0;
};

// Accuracy over the scored items (logliks[i] belongs to items[i]); the standard error is lm-eval's:
// sample standard deviation of the 0/1 outcomes over sqrt(n).
McSummary summarise(std::span<const McItem> items, std::span<const std::vector<double>> logliks);

}  // namespace tappa::eval

// ---- The eval-kv grid
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
// must match); a cancelled RunControl (the CLI's SIGINT/SIGTERM) finishes the current cell, writes,
// and returns.

namespace tappa::evalkv {

// Checks a method spec of the grid ("name[:key=value]…", the KV spec strings of include/tappa/kv.h;
// the label is the spec as written and names the row in every table). Throws tappa::Error (one line).
void check_method_spec(std::string_view spec);
// One item of the --methods list as the specs it stands for: a method group, or the item itself.
// "paper": the baselines as the TAPPA repo's harness runs them (pred_kvcache.py, PAPER.md §3.5) —
// streamingllm keeping the first C − W tokens, h2o with only the W×W corner masked, snapkv and
// pyramidkv with max-pool k = 7 — plus cake and tappa, all with the harness's query-head granularity
// (one keep-set per query head after repeat_kv; the memory of H lists per layer is counted).
std::vector<std::string> expand_methods(std::string_view item);

std::vector<std::string> split_list(std::string_view s, char sep = ',');

// The generated task names (RULER-style needles, variable tracking, common words, passkey), in their
// canonical order.
const std::vector<std::string>& ruler_task_names();

struct GridConfig {
  std::string model_path;
  std::string data_dir;
  std::vector<std::string> methods;     // method specs (check_method_spec); fullkv is added first if missing (the reference)
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
// with the whole results object whenever they should be written. `control` counts cells (its
// progress starts with (0, cells to run)); its cancellation stops the grid after the current cell,
// and run_grid then returns false. With `owns_group`, only the groups g (grid_order's indices) with
// owns_group(g) run (the ranks of `mpirun tappa eval-kv` split the grid by group, so each prefill happens once);
// `current`, if given, names what is running (a group, then each cell's key) for error reports.
bool run_grid(const Model& model, const GridConfig& cfg, nlohmann::json& results,
              const std::function<void(const nlohmann::json&, bool force)>& checkpoint, const RunControl& control = {},
              const std::function<bool(int64_t group)>& owns_group = {}, std::string* current = nullptr);

// The key that identifies a cell in the results ("task|length|sample|mode|method|budget").
std::string cell_key(const nlohmann::json& cell);

// Writes results.csv, table.md and plots/*.svg under `dir` (atomically, file by file). Returns the
// markdown text.
std::string write_summary(const nlohmann::json& results, const std::string& dir);

}  // namespace tappa::evalkv
