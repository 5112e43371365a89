// tappa calibrate — per-layer Block Influence and pre-RoPE q-similarity over calibration texts
// (include/tappa/prune.h), written in the official raw-score layout plus tappa's metadata.
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/progress.h"
#include "cli/sharded.h"
#include "cli/stop_signal.h"
#include "cli/world.h"
#include "tappa/error.h"
#include "tappa/files.h"
#include "tappa/prune.h"

namespace tappa::cli {

namespace {
// "scores.json" → "scores.bi.json".
std::string sibling(const std::string& out, const std::string& tag) {
  const std::string ext = ".json";
  const std::string stem = out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0
                               ? out.substr(0, out.size() - ext.size()) : out;
  return stem + "." + tag + ".json";
}
}  // namespace

void register_calibrate(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("calibrate", "Per-layer Block Influence and q-similarity for layer pruning");
  cmd->footer(
      "Each file is tokenised whole (BOS as the model does); windows of --window tokens start every --stride\n"
      "tokens (the last ones shorter), each a fresh forward pass. Per window: BI_l = mean over tokens of\n"
      "1 - cos(block input, block output) (the last block's output after the final norm, as Hugging Face\n"
      "reports it; --angular: acos(cos)/pi), q-sim_l = mean over heads of the mean off-diagonal cosine of\n"
      "the pre-RoPE queries. Both are averaged over windows (the official scripts' 1024/256 defaults).\n\n"
      "Writes OUT (both scores and the metadata) and, in the official raw-score layout ({score_type \"BI\" or\n"
      "\"q_similarity\", scores, prune_order = layers by ascending score, settings}), OUT-stem.bi.json and\n"
      "OUT-stem.qsim.json.\n\n"
      "Examples:\n"
      "  tappa calibrate -f ../shared/data/niah_paulgraham_essays/*.txt --max-windows 64 -o scores.json\n"
      "  tappa prune-order --scores scores.json --beta 0.2\n"
      "  tappa calibrate -f book.txt -o scores.json --resume     # continue after an interruption\n"
      "  mpirun -np 4 tappa calibrate -f book.txt -t 2 -o scores.json   # windows split over MPI ranks\n"
      "                                                          # (docs/DISTRIBUTED.md)");
  struct Opts {
    std::string model, out, checkpoint, plot;
    std::vector<std::string> files;
    prune::CalibrationOptions cal;
    bool resume = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-f,--file", o->files, "Calibration text files (one or more)")->required();
  cmd->add_option("-o,--output", o->out, "Scores JSON")->required();
  cmd->add_option("--window", o->cal.window, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--stride", o->cal.stride, "Distance between window starts")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-windows", o->cal.max_windows, "Use only the first N windows (0: all)")->capture_default_str()->check(CLI::Range(0, 1 << 30));
  cmd->add_flag("--angular", o->cal.angular, "Angular BI: acos(cos)/pi instead of 1 - cos");
  cmd->add_option("-t,--threads", o->cal.n_threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint file (default: OUTPUT.ckpt.json)");
  cmd->add_flag("--resume", o->resume, "Continue from the checkpoint of an interrupted run with the same settings");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress bar");
  cmd->add_option("--plot", o->plot, "Also draw BI and q-sim per layer as an SVG line chart");
  cmd->callback([o, &rc] {
    World& world = World::get();  // first: under mpirun, errors from here on name the rank
    const auto model = Model::load(o->model);
    const ModelConfig& c = model->config();
    std::vector<std::vector<int32_t>> texts;
    std::vector<int64_t> lengths;
    for (const std::string& f : o->files) {
      texts.push_back(model->tokenizer().encode(read_file(f), /*add_special=*/true));
      lengths.push_back(static_cast<int64_t>(texts.back().size()));
    }
    std::vector<prune::WindowRef> windows = prune::make_windows(lengths, o->cal.window, o->cal.stride);
    if (o->cal.max_windows > 0 && static_cast<int>(windows.size()) > o->cal.max_windows) windows.resize(o->cal.max_windows);
    if (windows.empty()) throw Error("the calibration texts give no window of at least 2 tokens");

    const std::string ckpt = o->checkpoint.empty() ? o->out + ".ckpt.json" : o->checkpoint;
    const nlohmann::json settings = {{"model", o->model}, {"files", o->files}, {"window", o->cal.window},
                                     {"stride", o->cal.stride}, {"angular", o->cal.angular},
                                     {"n_windows", windows.size()}, {"text_tokens", lengths}};
    const char* which = "model, files, window, stride, --angular";
    prune::CalibrationState state;
    if (o->resume && std::filesystem::exists(ckpt)) {
      const nlohmann::json j = read_checkpoint(ckpt, settings, which);
      try {
        state.n_layer = j.at("n_layer").get<int>();
        state.windows_done = j.at("windows_done").get<int>();
        state.tokens_done = j.at("tokens_done").get<int64_t>();
        state.bi_sum = j.at("bi_sum").get<std::vector<double>>();
        state.qsim_sum = j.at("qsim_sum").get<std::vector<double>>();
      } catch (const nlohmann::json::exception& e) {
        throw Error(ckpt + ": not a valid checkpoint (" + e.what() + ")");
      }
      // The checkpoint's own numbers must fit its settings (a hand-edited or foreign file must not index
      // past the per-layer sums).
      if (state.n_layer != c.n_layer || state.bi_sum.size() != static_cast<size_t>(c.n_layer) ||
          state.qsim_sum.size() != static_cast<size_t>(c.n_layer) || state.windows_done < 0 ||
          static_cast<size_t>(state.windows_done) > windows.size() || state.tokens_done < 0)
        throw Error(ckpt + ": not a valid checkpoint (layer count, per-layer sums or windows done do not fit the settings)");
      if (world.root())
        std::fprintf(stderr, "tappa calibrate: resuming after %d of %zu windows\n", state.windows_done, windows.size());
    }
    int64_t total_tokens = 0;
    for (const auto& w : windows) total_tokens += w.length;
    if (!o->quiet && world.root())
      std::fprintf(stderr, "tappa calibrate: %zu texts, %zu windows (%lld tokens), %d layers%s\n", texts.size(),
                   windows.size(), static_cast<long long>(total_tokens), c.n_layer,
                   world.size() > 1 ? (", " + std::to_string(world.size()) + " ranks").c_str() : "");
    StopSignalScope stop_scope;
    const auto save_checkpoint = [&](const prune::CalibrationState& s) {
      atomic_write(ckpt, nlohmann::json{{"settings", settings}, {"n_layer", s.n_layer}, {"windows_done", s.windows_done},
                                                {"tokens_done", s.tokens_done}, {"bi_sum", s.bi_sum},
                                                {"qsim_sum", s.qsim_sum}}.dump());
    };
    // Window w on rank w mod N (cli/sharded.h): each rank scores its windows alone and checkpoints the
    // per-window scores (CKPT.rank<r>); rank 0 adds them in window order, the additions one process
    // makes, so the sums are bitwise those of one process. Also taken by one process resuming from
    // the rank files of an interrupted mpirun.
    ShardedItems shards(world, static_cast<int64_t>(windows.size()), ckpt, settings, which);
    if (world.size() > 1 || (o->resume && !shards.rank_files().empty())) {
      if (state.n_layer == 0) {
        state.n_layer = c.n_layer;
        state.bi_sum.assign(c.n_layer, 0.0);
        state.qsim_sum.assign(c.n_layer, 0.0);
      }
      const size_t prefix = static_cast<size_t>(state.windows_done);  // from the one-process checkpoint
      if (o->resume) shards.resume();
      int64_t n_mine = 0, n_mine_done = 0;
      for (size_t w = prefix; w < windows.size(); ++w)
        if (shards.mine(static_cast<int64_t>(w))) {
          ++n_mine;
          n_mine_done += shards.done(static_cast<int64_t>(w)) ? 1 : 0;
        }
      if (o->resume && world.root()) {
        int64_t n_known = static_cast<int64_t>(prefix);
        for (size_t w = prefix; w < windows.size(); ++w) n_known += shards.done(static_cast<int64_t>(w)) ? 1 : 0;
        std::fprintf(stderr, "tappa calibrate: resuming with %lld of %zu windows done\n", static_cast<long long>(n_known),
                     windows.size());
      }
      Progress progress("calibrate", n_mine, "windows of rank 0", !o->quiet && world.root());
      progress.update(n_mine_done);
      size_t current = 0;
      try {
        prune::score_windows(
            *model, texts, windows, o->cal,
            [&](size_t w) {
              const bool want = w >= prefix && shards.mine(static_cast<int64_t>(w)) && !shards.done(static_cast<int64_t>(w)) &&
                                !stop_requested();
              if (want) current = w;
              return want;
            },
            [&](size_t w, const prune::WindowScores& s) {
              shards.record(static_cast<int64_t>(w), {{"bi", s.bi}, {"qsim", s.qsim}});
              progress.update(++n_mine_done);
              return !stop_requested();
            });
      } catch (const std::exception& e) {
        shards.flush();
        const prune::WindowRef& win = windows[current];
        world.fail("window " + std::to_string(current) + " (" + o->files[win.text] + ", tokens " + std::to_string(win.start) +
                   "-" + std::to_string(win.start + win.length) + "): " + e.what());
      }
      progress.finish();
      const std::optional<std::vector<nlohmann::json>> gathered = shards.flush_and_gather(rc);
      if (!gathered) return;
      const std::vector<nlohmann::json>& all = *gathered;
      // The leading run of finished windows, as one process would have them after a stop.
      for (size_t w = prefix; w < windows.size() && !all[w].is_null(); ++w) {
        try {
          state.add_window(all[w].at("bi").get<std::vector<double>>(), all[w].at("qsim").get<std::vector<double>>(),
                           windows[w].length);
        } catch (const nlohmann::json::exception& e) {
          throw Error("calibrate: window " + std::to_string(w) + ": malformed scores (" + e.what() + ")");
        }
      }
      save_checkpoint(state);  // what one process leaves after its last window
      if (state.windows_done == static_cast<int>(windows.size())) shards.remove_rank_files();
    } else {
      Progress progress("calibrate", total_tokens, "tok", !o->quiet);
      progress.update(state.tokens_done);
      prune::run_calibration(*model, texts, windows, o->cal, state, [&](const prune::CalibrationState& s) {
        save_checkpoint(s);
        progress.update(s.tokens_done);
        return !stop_requested();
      });
      progress.finish();
      // Rank files of an earlier mpirun of this checkpoint are stale once one process has every window.
      if (state.windows_done == static_cast<int>(windows.size())) shards.remove_rank_files();
    }
    const bool complete = state.windows_done == static_cast<int>(windows.size());

    const std::vector<double> bi = state.bi(), qsim = state.qsim();
    const nlohmann::json meta = {{"tool", "tappa calibrate"}, {"settings", settings}, {"windows_done", state.windows_done},
                                 {"tokens", state.tokens_done}, {"complete", complete},
                                 {"bi_definition", o->cal.angular ? "angular: acos(cos)/pi" : "1 - cos"},
                                 {"qsim_definition", "pre-RoPE q, mean off-diagonal cosine, mean over heads"},
                                 {"layers", "0-based"}};
    // The official raw-score layout: "BI" / "q_similarity", both prune_orders by ascending score, and
    // the settings the official scripts record that have a counterpart here (batch 1; one forward per
    // window, the official q-sim script's generate(max_new_tokens=1)).
    nlohmann::json bi_json = prune::raw_score_json(prune::RawScoreType::bi, bi);
    nlohmann::json q_json = prune::raw_score_json(prune::RawScoreType::q_similarity, qsim);
    for (nlohmann::json* j : {&bi_json, &q_json}) {
      (*j)["model"] = c.name.empty() ? o->model : c.name;
      (*j)["model_path"] = o->model;
      (*j)["max_seq_len"] = o->cal.window;
      (*j)["stride"] = o->cal.stride;
      (*j)["batch_size"] = 1;
    }
    bi_json["angular"] = o->cal.angular;
    q_json["max_new_tokens"] = 1;
    nlohmann::json combined = {{"bi", bi_json}, {"qsim", q_json}, {"metadata", meta}};
    atomic_write(o->out, combined.dump(2) + "\n");
    nlohmann::json b = bi_json, q = q_json;
    b["metadata"] = meta;
    q["metadata"] = meta;
    atomic_write(sibling(o->out, "bi"), b.dump(2) + "\n");
    atomic_write(sibling(o->out, "qsim"), q.dump(2) + "\n");
    if (!o->plot.empty()) {
      const std::string title = "Per-layer Block Influence and q-similarity — " + (c.name.empty() ? o->model : c.name);
      const std::string annotation = std::to_string(state.windows_done) + " windows of " + std::to_string(o->cal.window) +
                                     " tokens (stride " + std::to_string(o->cal.stride) + "), " +
                                     std::to_string(state.tokens_done) + " tokens";
      atomic_write(o->plot, prune::calibration_chart_svg(bi, qsim, o->cal.angular, title, annotation) + "\n");
    }
    std::printf("layer        BI     q-sim\n");
    for (int l = 0; l < c.n_layer; ++l) std::printf("%5d  %8.4f  %8.4f\n", l, bi[l], qsim[l]);
    std::printf("wrote %s, %s, %s (%d windows, %lld tokens)\n", o->out.c_str(), sibling(o->out, "bi").c_str(),
                sibling(o->out, "qsim").c_str(), state.windows_done, static_cast<long long>(state.tokens_done));
    if (!complete) {
      std::fprintf(stderr, "tappa calibrate: stopped after %d of %zu windows; the scores cover those (rerun with --resume)\n",
                   state.windows_done, windows.size());
      rc = 128 + stop_signal_number();
      return;
    }
    rc = 0;
  });
}

}  // namespace tappa::cli
