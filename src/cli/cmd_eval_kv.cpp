// tappa eval-kv — the KV-compression evaluation grid: methods × budgets × tasks × lengths × modes,
// scored against the uncompressed cache, with resumable, atomically written results and a report.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/progress.h"
#include "cli/sharded.h"
#include "cli/stop_signal.h"
#include "cli/world.h"
#include "tappa/error.h"
#include "tappa/eval.h"
#include "tappa/files.h"
#include "tappa/model.h"

namespace tappa::cli {


namespace {

constexpr const char* kDefaultMethods =
    "fullkv,streamingllm,h2o,snapkv,pyramidkv,cake,expected-attention,tappa,tappa:alpha=1,tappa-head";

std::string default_tasks() {
  std::string s;
  for (const auto& t : evalkv::ruler_task_names()) s += t + ",";
  return s + "longbench_multi_news,fidelity_wikitext,fidelity_essays";
}

std::vector<int> parse_ints(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (const auto& item : evalkv::split_list(text)) {
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > (1 << 24)) throw std::invalid_argument(item);
      out.push_back(static_cast<int>(v));
    } catch (const std::exception&) {
      throw Error(flag + ": '" + item + "' is not a non-negative integer");
    }
  }
  if (out.empty()) throw Error(flag + ": empty list");
  return out;
}

std::string default_data_dir() {
  if (const char* env = std::getenv("TAPPA_DATA_DIR"); env && *env) return env;
  return "../shared/data";
}

std::string read_text(const std::string& path) {
  try {
    return read_file(path);
  } catch (const Error&) {
    throw;
  }
}

std::string dump_results(const nlohmann::json& j) {
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

nlohmann::json load_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON (" + std::string(e.what()).substr(0, 120) + ")");
  }
}

constexpr const char* kSettingsWhich =
    "methods, budgets, tasks, lengths, modes, samples, seed, token counts or model";

// `mpirun -np N tappa eval-kv` (and one process resuming from the rank files such a run left): group g
// of the grid — one (task, length, sample, mode), prefilled once, with all its method × budget
// cells — runs on rank g mod N, the same split on every launch. Each rank checkpoints the cells it has
// into OUT/results.json.rank<r> (atomically, at most once a second and after every group); rank 0
// gathers every cell (as CBOR: the very bits and bytes each rank holds, predictions that are not
// valid UTF-8 included), puts them in grid order — the order one process runs and writes them — and
// writes results.json, results.csv, table.md and plots/ with the one-process code. Once the grid is
// complete the rank files are removed, leaving the files one process leaves.
int run_sharded(World& world, const Model& model, const evalkv::GridConfig& cfg, const std::string& out, bool resume,
                bool force, bool show_progress) {
  namespace fs = std::filesystem;
  const std::string results_path = (fs::path(out) / "results.json").string();
  const nlohmann::json config = cfg.to_json();
  const std::vector<std::string> old_ranks = rank_files_of(results_path);
  if (!force && !resume) {
    if (fs::exists(results_path))
      throw Error(results_path + " exists: add --resume to continue that run, or --force to start over");
    if (!old_ranks.empty())
      throw Error(old_ranks.front() + " exists (an interrupted mpirun): add --resume to continue that run, or --force to start over");
  }
  nlohmann::json results = {{"format", "tappa-eval-kv/1"}, {"config", config}, {"cells", nlohmann::json::array()}};
  std::map<std::string, nlohmann::json> known;  // cell key -> cell, from results.json and every rank file
  if (!force) {
    if (fs::exists(results_path)) {
      results = load_json(results_path);
      if (!results.contains("config") || results["config"] != config)
        throw Error(results_path + " was made with different settings (" + kSettingsWhich +
                    "); use the same flags to resume, or --force");
      for (const auto& c : results.at("cells")) known.emplace(evalkv::cell_key(c), c);
    }
    for (const std::string& path : old_ranks) {
      const nlohmann::json j = read_checkpoint(path, config, kSettingsWhich);
      try {
        for (const auto& c : j.at("cells")) known.emplace(evalkv::cell_key(c), c);
      } catch (const nlohmann::json::exception& e) {
        throw Error(path + ": not a valid checkpoint (" + e.what() + ")");
      }
    }
  }
  const evalkv::GridOrder order = evalkv::grid_order(cfg);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < order.keys.size(); ++i) index.emplace(order.keys[i], i);
  world.barrier();  // every rank has read the old files before rank 0 removes any (--force)
  if (world.root()) {
    if (force) {
      std::error_code ec;
      fs::remove(results_path, ec);
      for (const std::string& path : old_ranks) fs::remove(path, ec);
    }
    fs::create_directories(out);
  }
  world.barrier();
  if (world.root() && !known.empty())
    std::fprintf(stderr, "tappa eval-kv: resuming with %zu of %zu cells done\n", known.size(), order.keys.size());

  // This rank's share: the known cells of its groups, in grid order.
  nlohmann::json mine = {{"format", results.value("format", "tappa-eval-kv/1")}, {"config", config},
                         {"cells", nlohmann::json::array()}};
  for (size_t i = 0; i < order.keys.size(); ++i)
    if (world.owns(order.group[i]))
      if (const auto it = known.find(order.keys[i]); it != known.end()) mine["cells"].push_back(it->second);
  const std::string rank_path = results_path + ".rank" + std::to_string(world.rank());
  auto last_write = std::chrono::steady_clock::now() - std::chrono::hours(1);
  const auto save = [&](const nlohmann::json& r, bool force_write) {
    const auto now = std::chrono::steady_clock::now();
    if (!force_write && now - last_write < std::chrono::seconds(1)) return;
    atomic_write(rank_path, dump_results(nlohmann::json{{"settings", config}, {"cells", r.at("cells")}}));
    last_write = now;
  };
  std::string current = "setup";
  bool finished = false;
  try {
    ProgressSink bar("eval-kv", "cells", show_progress && world.root());
    finished = evalkv::run_grid(model, cfg, mine, save, bar.control(&stop_token()),
                                [&](int64_t g) { return world.owns(g); }, &current);
    bar.finish();
  } catch (const std::exception& e) {
    try {
      save(mine, true);  // keep what this rank did: --resume continues after a fix
    } catch (const std::exception&) {
    }
    world.fail(current + ": " + e.what());
  }
  save(mine, true);
  const std::vector<uint8_t> cbor = nlohmann::json::to_cbor(mine.at("cells"));
  const std::vector<std::string> all = world.gather(std::string(cbor.begin(), cbor.end()));
  if (!world.root()) return finished ? 0 : 128 + stop_signal_number();

  std::vector<nlohmann::json> cells(order.keys.size());
  for (const std::string& part : all)
    for (auto& c : nlohmann::json::from_cbor(part)) {
      const auto it = index.find(evalkv::cell_key(c));
      if (it != index.end() && cells[it->second].is_null()) cells[it->second] = std::move(c);
    }
  size_t n_known = 0;
  for (const auto& k : order.keys) n_known += known.count(k);
  results["cells"] = nlohmann::json::array();
  for (auto& c : cells)
    if (!c.is_null()) results["cells"].push_back(std::move(c));
  const bool complete = results["cells"].size() == order.keys.size();
  results["model_name"] = model.config().name;
  results["complete"] = complete;
  atomic_write(results_path, dump_results(results));
  evalkv::write_summary(results, out);
  const size_t ran = results["cells"].size() - n_known;
  if (!complete) {
    std::fprintf(stderr,
                 "tappa: stopped by signal %d after %zu new cells (%zu of %zu done); results written to %s — "
                 "continue with the same flags and --resume\n",
                 stop_signal_number(), ran, results["cells"].size(), order.keys.size(), results_path.c_str());
    return 128 + stop_signal_number();
  }
  std::error_code ec;
  for (const std::string& path : rank_files_of(results_path)) fs::remove(path, ec);
  std::printf("%zu cells (%zu run now); wrote %s, %s/results.csv, %s/table.md, %s/plots/\n", results["cells"].size(),
              ran, results_path.c_str(), out.c_str(), out.c_str(), out.c_str());
  return 0;
}

}  // namespace

void register_eval_kv(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("eval-kv",
                                 "Evaluate KV-cache compression methods: long-context tasks (RULER-style, passkey, "
                                 "LongBench) and fidelity to the full cache, over a grid of methods and budgets");
  cmd->footer(
      "Every (task, length, sample, mode) is prefilled once; each (method, budget) cell then compresses that cache\n"
      "and answers (or is teacher-forced). Results go to OUT/results.json (atomically, after every cell), with\n"
      "OUT/results.csv, OUT/table.md (mean ± standard error) and OUT/plots/*.svg.\n"
      "Ctrl-C / SIGTERM: the current cell finishes, results are written, exit code 128+signal; --resume continues.\n\n"
      "Tasks: niah_single_{words,numbers,uuids}, niah_multikey, niah_multivalue, niah_multiquery (needle depths\n"
      "swept over samples), vt (variable tracking), cwe (common words), passkey, longbench_<dataset> (reads\n"
      "DATA/longbench/<dataset>.jsonl), longbench:<file.jsonl> (any LongBench-format file), fidelity_wikitext,\n"
      "fidelity_essays (KL, top-1, NLL over --fidelity-tokens teacher-forced tokens; greedy agreement length).\n"
      "Modes: query-aware (question inside the compressed prompt, as SnapKV/CAKE/TAPPA evaluate) and\n"
      "query-agnostic (context compressed alone, question appended afterwards, as kvpress evaluates).\n"
      "Method specs: NAME[:key=value...], keys (the run/compress flags of the same name; booleans 0/1) alpha,\n"
      "window, gamma, pool, cascading, decode-evict, decode-evict-every, n-sink, streaming-first, h2o-rows,\n"
      "h2o-official-mask, snapkv-mean, pyramid-beta, tau, min-head-frac, ea-n-future, ea-covariance, ea-vnorm,\n"
      "ea-epsilon, ea-stat-rows, seed; e.g. tappa:alpha=1, snapkv:pool=max7, streamingllm:streaming-first=1\n"
      "(KVCache-Factory's StreamingLLM row), h2o:h2o-official-mask=1.\n\n"
      "Examples:\n"
      "  tappa eval-kv --tasks passkey,niah_single_numbers --lengths 1024 --samples 2 --budgets 64,128 -o out\n"
      "  tappa eval-kv -o out --resume                      # continue an interrupted run (same flags)\n"
      "  tappa eval-kv --tasks longbench:my.jsonl --methods fullkv,snapkv,tappa --budgets 256 -o lb\n"
      "  tappa eval-kv --tasks fidelity_wikitext --methods fullkv,snapkv,tappa --cache-types f32,f16,q8_0,q4_0 -o fr\n"
      "  tappa eval-kv --summarize -o out                   # rewrite table.md/csv/plots from results.json\n"
      "  mpirun -np 4 tappa eval-kv --samples 8 -t 2 -o out # samples split over MPI ranks (docs/DISTRIBUTED.md)\n"
      "  scripts/eval_kv_grid.sh                            # the default-model grid of docs/RESULTS.md\n\n" +
      kv_methods_help());
  struct Opts {
    std::string model, methods = kDefaultMethods, budgets = "64,128,256,512", tasks = default_tasks(),
                       lengths = "2048", modes = "query-aware", out = "eval-kv-out", data = default_data_dir(),
                       cache_types = "f32";
    int samples = 3, threads = 0, fidelity_tokens = 64, greedy_tokens = 32, lb_max_new = 64;
    uint64_t seed = 0;
    bool resume = false, force = false, no_progress = false, summarize = false, no_chat = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("--methods", o->methods, "Comma-separated method specs (fullkv is always run as the reference; 'paper': the TAPPA harness's baselines)")
      ->capture_default_str();
  cmd->add_option("--budgets", o->budgets, "Comma-separated budgets, tokens per layer (window included)")
      ->capture_default_str();
  cmd->add_option("--tasks", o->tasks, "Comma-separated tasks (see below)")->capture_default_str();
  cmd->add_option("--lengths", o->lengths, "Comma-separated prompt lengths in tokens")->capture_default_str();
  cmd->add_option("--modes", o->modes, "query-aware and/or query-agnostic")->capture_default_str();
  cmd->add_option("--cache-types", o->cache_types,
                  "K/V cache storage axis: TYPE or K/V (f32, f16, bf16, q8_0, q4_0), optional :rot=on|off; every method "
                  "and budget runs on each, labelled METHOD@TYPE (fidelity reference: the f32 full cache)")
      ->capture_default_str();
  cmd->add_option("--samples", o->samples, "Samples per task and length")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", o->seed, "Seed of the task generators and sample choice")->capture_default_str();
  cmd->add_option("--fidelity-tokens", o->fidelity_tokens, "M: teacher-forced continuation tokens (fidelity tasks)")
      ->capture_default_str()->check(CLI::Range(2, 4096));
  cmd->add_option("--greedy-tokens", o->greedy_tokens, "G: greedy agreement horizon (fidelity tasks)")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--longbench-max-new", o->lb_max_new, "Cap on LongBench's generation lengths (multi_news: 512)")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("--data-dir", o->data, "Evaluation data folder ($TAPPA_DATA_DIR)")->capture_default_str();
  cmd->add_option("-o,--out", o->out, "Output folder")->capture_default_str();
  cmd->add_flag("--no-chat", o->no_chat,
                 "LongBench prompts as plain text (default: in the model's chat template, as LongBench's pred.py does "
                 "for chat models, except trec, triviaqa, samsum, lsht, lcc, repobench-p)");
  cmd->add_flag("--resume", o->resume, "Continue the run in --out (its configuration must match)");
  cmd->add_flag("--force", o->force, "Start over even if --out holds results");
  cmd->add_flag("--no-progress", o->no_progress, "No progress bar");
  cmd->add_flag("--summarize", o->summarize, "Only rewrite the tables and plots from OUT/results.json");

  cmd->callback([o, &rc] {
    namespace fs = std::filesystem;
    World& world = World::get();  // first: under mpirun, errors from here on name the rank
    const std::string results_path = (fs::path(o->out) / "results.json").string();
    const auto dump = dump_results;
    auto load_results = [&]() { return load_json(results_path); };
    if (o->summarize) {
      if (!world.root()) {  // under mpirun: rank 0 alone rewrites the summary
        rc = 0;
        return;
      }
      if (!fs::exists(results_path)) throw Error(results_path + ": not found (run eval-kv first)");
      evalkv::write_summary(load_results(), o->out);
      std::printf("wrote %s/table.md, results.csv, plots/\n", o->out.c_str());
      rc = 0;
      return;
    }

    evalkv::GridConfig cfg;
    cfg.model_path = o->model;
    cfg.data_dir = o->data;
    for (const auto& item : evalkv::split_list(o->methods))
      for (const auto& m : evalkv::expand_methods(item)) {  // "paper": the TAPPA harness's baselines
        evalkv::check_method_spec(m);
        cfg.methods.push_back(m);
      }
    cfg.budgets = parse_ints("--budgets", o->budgets);
    cfg.tasks = evalkv::split_list(o->tasks);
    cfg.lengths = parse_ints("--lengths", o->lengths);
    cfg.modes = evalkv::split_list(o->modes);
    cfg.cache_types = evalkv::split_list(o->cache_types);
    cfg.samples = o->samples;
    cfg.seed = o->seed;
    cfg.fidelity_tokens = o->fidelity_tokens;
    cfg.greedy_tokens = o->greedy_tokens;
    cfg.longbench_max_new = o->lb_max_new;
    cfg.threads = o->threads;
    cfg.longbench_chat = !o->no_chat;

    // mpirun (or one process resuming what an interrupted mpirun left): the grid split by group.
    const std::vector<std::string> rank_files = rank_files_of(results_path);
    if (world.size() > 1 || (o->resume && !o->force && !rank_files.empty())) {
      StopSignalScope stop_scope;
      const auto model = Model::load(o->model);
      rc = run_sharded(world, *model, cfg, o->out, o->resume, o->force, !o->no_progress);
      return;
    }
    if (!rank_files.empty() && !o->force && !o->resume)
      throw Error(rank_files.front() + " exists (an interrupted mpirun): add --resume to continue that run, or --force to start over");
    if (o->force)
      for (const std::string& path : rank_files) fs::remove(path);

    nlohmann::json results;
    if (fs::exists(results_path) && !o->force) {
      if (!o->resume)
        throw Error(results_path + " exists: add --resume to continue that run, or --force to start over");
      results = load_results();
      if (!results.contains("config") || results["config"] != cfg.to_json())
        throw Error(results_path + " was made with different settings (methods, budgets, tasks, lengths, modes, "
                    "samples, seed, token counts or model); use the same flags to resume, or --force");
    } else {
      results = nlohmann::json::object();
      results["format"] = "tappa-eval-kv/1";
      results["config"] = cfg.to_json();
      results["cells"] = nlohmann::json::array();
    }
    fs::create_directories(o->out);

    StopSignalScope stop_scope;
    const auto model = Model::load(o->model);
    results["model_name"] = model->config().name;
    results["complete"] = false;
    auto last_write = std::chrono::steady_clock::now() - std::chrono::hours(1);
    auto checkpoint = [&](const nlohmann::json& r, bool force) {
      const auto now = std::chrono::steady_clock::now();
      // At most once a second (the file grows to a few MB; a kill loses at most a second of cells).
      if (!force && now - last_write < std::chrono::seconds(1)) return;
      atomic_write(results_path, dump(r));
      last_write = now;
    };
    const size_t before = results["cells"].size();
    bool finished = false;
    try {
      ProgressSink bar("eval-kv", "cells", !o->no_progress);
      finished = evalkv::run_grid(*model, cfg, results, checkpoint, bar.control(&stop_token()));
      bar.finish();
    } catch (const Error&) {
      // Keep the cells done so far (the checkpoint is throttled): --resume continues after a fix.
      if (results["cells"].size() > before) atomic_write(results_path, dump(results));
      throw;
    }
    results["complete"] = finished;
    atomic_write(results_path, dump(results));
    evalkv::write_summary(results, o->out);
    const size_t ran = results["cells"].size() - before;
    if (!finished) {
      std::fprintf(stderr,
                   "tappa: stopped by signal %d after %zu new cells (%zu of %lld done); results written to %s — "
                   "continue with the same flags and --resume\n",
                   stop_signal_number(), ran, results["cells"].size(), static_cast<long long>(evalkv::grid_size(cfg)),
                   results_path.c_str());
      rc = 128 + stop_signal_number();
      return;
    }
    std::printf("%zu cells (%zu run now); wrote %s, %s/results.csv, %s/table.md, %s/plots/\n", results["cells"].size(),
                ran, results_path.c_str(), o->out.c_str(), o->out.c_str(), o->out.c_str());
    rc = 0;
  });
}

}  // namespace tappa::cli
