// tappa eval-mc — zero-shot multiple-choice accuracy (PIQA, ARC-Easy/Challenge, WinoGrande,
// HellaSwag) by log-likelihood, lm-evaluation-harness style (include/tappa/eval.h), optionally with
// layers skipped. Checkpoints after every item; --resume continues an interrupted run.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/progress.h"
#include "cli/sharded.h"
#include "cli/stop_signal.h"
#include "cli/world.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/eval.h"
#include "tappa/files.h"
#include "tappa/prune.h"

namespace tappa::cli {

namespace {

std::vector<eval::McItem> load_task(eval::McTask t, const std::string& dir) {
  const std::string d = dir + "/";
  switch (t) {
    case eval::McTask::piqa: return eval::parse_piqa(read_file(d + "piqa/valid.jsonl"), read_file(d + "piqa/valid-labels.lst"));
    case eval::McTask::arc_easy: return eval::parse_arc(read_file(d + "arc/ARC-Easy-Test.jsonl"));
    case eval::McTask::arc_challenge: return eval::parse_arc(read_file(d + "arc/ARC-Challenge-Test.jsonl"));
    case eval::McTask::winogrande: return eval::parse_winogrande(read_file(d + "winogrande/winogrande_dev.llmfoundry.jsonl"));
    case eval::McTask::hellaswag: return eval::parse_hellaswag(read_file(d + "hellaswag/hellaswag_val_full.part0.txt"));
  }
  return {};
}

std::string default_data_dir() {
  if (const char* env = std::getenv("TAPPA_DATA_DIR"); env && *env) return env;
  return "../shared/data";
}

}  // namespace

void register_eval_mc(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("eval-mc", "Zero-shot multiple-choice accuracy (piqa, arc_easy, arc_challenge, winogrande, hellaswag)");
  cmd->footer(
      "Scoring follows lm-evaluation-harness: log P(' choice' | context); acc = argmax log-likelihood,\n"
      "acc_norm = argmax log-likelihood per byte of the choice. The paper reports acc_norm for piqa,\n"
      "arc_easy and hellaswag and acc for winogrande; 'average' is the mean of those metrics.\n"
      "Items: the first --limit of each file (piqa valid, ARC test, WinoGrande dev, HellaSwag val part 0).\n\n"
      "Examples:\n"
      "  tappa eval-mc --limit 200 -o mc.json\n"
      "  tappa eval-mc --tasks piqa,winogrande --limit 100 --skip-layers 20-24\n"
      "  tappa eval-mc --limit 200 -o mc.json --resume      # continue after an interruption");
  struct Opts {
    std::string model, tasks = "piqa,arc_easy,winogrande,hellaswag", data = default_data_dir(), out, checkpoint, skip;
    int limit = 0, threads = 0, ctx = 2048;
    bool resume = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("--tasks", o->tasks, "Comma-separated tasks")->capture_default_str();
  cmd->add_option("--data", o->data, "Data folder ($TAPPA_DATA_DIR overrides the default)")->capture_default_str();
  cmd->add_option("--limit", o->limit, "First N items of each task (0: all)")->capture_default_str()->check(CLI::Range(0, 1 << 30));
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--ctx-size", o->ctx, "Longest context + choice in tokens")->capture_default_str()->check(CLI::Range(8, 1 << 20));
  cmd->add_option("--skip-layers", o->skip, "Skip these layers (in-memory pruning), e.g. 3,5,20-24");
  cmd->add_option("-o,--output", o->out, "Write the results as JSON (atomically; per-item log-likelihoods included)");
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint file (default: OUTPUT.ckpt.json when -o is given)");
  cmd->add_flag("--resume", o->resume, "Continue from the checkpoint of an interrupted run with the same settings");
  cmd->add_flag("-q,--quiet", o->quiet, "Only the summary table");
  cmd->callback([o, &rc] {
    World& world = World::get();  // first: under mpirun, errors from here on name the rank
    std::vector<eval::McTask> tasks;
    {
      std::string rest = o->tasks;
      while (!rest.empty()) {
        const size_t c = rest.find(',');
        tasks.push_back(eval::parse_task_name(rest.substr(0, c)));
        rest = c == std::string::npos ? "" : rest.substr(c + 1);
      }
      if (tasks.empty()) throw Error("--tasks is empty");
    }
    const auto model = Model::load(o->model);
    const std::vector<int> skip = prune::parse_layer_list(o->skip, model->config().n_layer);
    std::vector<std::vector<eval::McItem>> items;
    for (eval::McTask t : tasks) {
      items.push_back(load_task(t, o->data));
      if (o->limit > 0 && static_cast<int>(items.back().size()) > o->limit) items.back().resize(o->limit);
    }
    const std::string ckpt = !o->checkpoint.empty() ? o->checkpoint : (o->out.empty() ? "" : o->out + ".ckpt.json");
    if (o->resume && ckpt.empty()) throw Error("--resume needs -o or --checkpoint (where the checkpoint lives)");
    const nlohmann::json settings = {{"model", o->model}, {"tasks", o->tasks}, {"limit", o->limit}, {"skip_layers", skip}};
    std::vector<std::vector<std::vector<double>>> ll(tasks.size());  // [task][item][choice]
    if (o->resume && std::filesystem::exists(ckpt)) {
      const nlohmann::json c = read_checkpoint(ckpt, settings, "model, tasks, --limit or --skip-layers");
      try {
        for (size_t t = 0; t < tasks.size(); ++t) ll[t] = c.at("loglik").at(t).get<std::vector<std::vector<double>>>();
      } catch (const nlohmann::json::exception& e) {
        throw Error(ckpt + ": not a valid checkpoint (" + e.what() + ")");
      }
      // Each scored item must exist and have one log-likelihood per choice (the summary indexes both).
      for (size_t t = 0; t < tasks.size(); ++t) {
        bool ok = ll[t].size() <= items[t].size();
        for (size_t i = 0; ok && i < ll[t].size(); ++i) ok = ll[t][i].size() == items[t][i].choices.size();
        if (!ok) throw Error(ckpt + ": not a valid checkpoint (task " + std::to_string(t) + "'s scores do not fit its items)");
      }
      size_t n_done = 0;
      for (const auto& v : ll) n_done += v.size();
      if (world.root()) std::fprintf(stderr, "tappa eval-mc: resuming after %zu items\n", n_done);
    }
    const auto save_checkpoint = [&] {
      if (ckpt.empty()) return;
      atomic_write(ckpt, nlohmann::json{{"settings", settings}, {"loglik", ll}}.dump());
    };

    EngineOptions eo;
    eo.n_threads = o->threads;
    eo.n_ctx = o->ctx;
    Engine engine(model, eo);
    engine.set_skip_layers(skip);
    int64_t total = 0, done = 0;
    for (size_t t = 0; t < tasks.size(); ++t) {
      total += static_cast<int64_t>(items[t].size());
      done += static_cast<int64_t>(ll[t].size());
    }
    StopSignalScope stop_scope;
    if (world.size() > 1) {
      // mpirun: item g of the tasks' concatenation on rank g mod N (cli/sharded.h); rank 0 gets every
      // item's log-likelihoods in item order and summarises as one process does.
      std::vector<std::pair<size_t, size_t>> where;  // g -> (task, item)
      for (size_t t = 0; t < tasks.size(); ++t)
        for (size_t i = 0; i < items[t].size(); ++i) where.emplace_back(t, i);
      ShardedItems shards(world, static_cast<int64_t>(where.size()), ckpt, settings, "model, tasks, --limit or --skip-layers");
      if (o->resume) {
        for (size_t g = 0; g < where.size(); ++g)  // the one-process checkpoint, if one was read above
          if (where[g].second < ll[where[g].first].size()) shards.add(static_cast<int64_t>(g), ll[where[g].first][where[g].second]);
        shards.resume();
      }
      Progress progress("eval-mc", shards.n_mine(), "items of rank 0", !o->quiet && world.root());
      progress.update(shards.n_mine_done());
      for (size_t g = 0; g < where.size() && !stop_requested(); ++g) {
        if (!shards.mine(static_cast<int64_t>(g)) || shards.done(static_cast<int64_t>(g))) continue;
        const auto [t, i] = where[g];
        std::vector<double> v;
        try {
          v = eval::score_item(engine, model->tokenizer(), items[t][i]);
        } catch (const std::exception& e) {
          world.fail("item " + std::to_string(i) + " of " + std::string(eval::task_name(tasks[t])) + ": " + e.what());
        }
        shards.record(static_cast<int64_t>(g), v, 10);
        progress.update(shards.n_mine_done());
      }
      progress.finish();
      const std::optional<std::vector<nlohmann::json>> gathered = shards.flush_and_gather(rc);
      if (!gathered) return;
      const std::vector<nlohmann::json>& all = *gathered;
      // Each task's leading run of finished items, as one process would have them after a stop.
      for (auto& v : ll) v.clear();
      std::vector<bool> open(tasks.size(), true);
      for (size_t g = 0; g < where.size(); ++g) {
        const auto [t, i] = where[g];
        if (!open[t] || all[g].is_null()) {
          open[t] = false;
          continue;
        }
        ll[t].push_back(all[g].get<std::vector<double>>());
        if (ll[t].back().size() != items[t][i].choices.size())
          throw Error("eval-mc: a rank returned " + std::to_string(ll[t].back().size()) + " scores for an item with " +
                      std::to_string(items[t][i].choices.size()) + " choices");
      }
    } else {
      Progress progress("eval-mc", total, "items", !o->quiet);
      progress.update(done);
      for (size_t t = 0; t < tasks.size() && !stop_requested(); ++t)
        for (size_t i = ll[t].size(); i < items[t].size() && !stop_requested(); ++i) {
          ll[t].push_back(eval::score_item(engine, model->tokenizer(), items[t][i]));
          if (++done % 10 == 0 || done == total) save_checkpoint();
          progress.update(done);
        }
      save_checkpoint();
      progress.finish();
    }

    nlohmann::json j = {{"settings", settings}, {"tasks", nlohmann::json::object()}};
    double avg = 0;
    bool complete = true;
    std::printf("%-14s %6s %8s %8s %9s %8s   %s\n", "task", "n", "acc", "±", "acc_norm", "±", "paper metric");
    for (size_t t = 0; t < tasks.size(); ++t) {
      const eval::McSummary s = eval::summarise(std::span(items[t]).first(ll[t].size()), ll[t]);
      const bool norm = eval::task_uses_acc_norm(tasks[t]);
      const double metric = norm ? s.acc_norm : s.acc;
      avg += metric / static_cast<double>(tasks.size());
      complete = complete && ll[t].size() == items[t].size();
      std::printf("%-14s %6d %8.4f %8.4f %9.4f %8.4f   %s\n", std::string(eval::task_name(tasks[t])).c_str(), s.n, s.acc,
                  s.acc_stderr, s.acc_norm, s.acc_norm_stderr, norm ? "acc_norm" : "acc");
      nlohmann::json per_item = nlohmann::json::array();
      for (size_t i = 0; i < ll[t].size(); ++i) per_item.push_back({{"gold", items[t][i].gold}, {"loglik", ll[t][i]}});
      j["tasks"][std::string(eval::task_name(tasks[t]))] = {
          {"n", s.n}, {"acc", s.acc}, {"acc_stderr", s.acc_stderr}, {"acc_norm", s.acc_norm},
          {"acc_norm_stderr", s.acc_norm_stderr}, {"metric", norm ? "acc_norm" : "acc"}, {"value", metric},
          {"items", per_item}};
    }
    std::printf("%-14s %6s %8.4f   (mean of the paper metrics)\n", "average", "", avg);
    j["average"] = avg;
    j["complete"] = complete;
    if (!o->out.empty()) atomic_write(o->out, j.dump(1) + "\n");
    if (!complete) {
      std::fprintf(stderr, "tappa eval-mc: stopped early (rerun with --resume to continue)\n");
      rc = 128 + stop_signal_number();
      return;
    }
    rc = 0;
  });
}

}  // namespace tappa::cli
