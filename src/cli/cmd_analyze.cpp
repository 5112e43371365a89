// tappa analyze — the TAPPA report for a model and a text.
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "cli/progress.h"
#include "cli/stop_signal.h"
#include "tappa/analysis.h"
#include "tappa/error.h"

namespace tappa::cli {

namespace {
constexpr const char* kDefaultInput = "/usr/share/common-licenses/GPL-3";
}

void register_analyze(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand(
      "analyze",
      "Explain every attention head: q-similarity, measured pattern (re-access/sink, sequential, periodic, "
      "seasonal, unpredictable), RoPE channels, and an HTML report");
  cmd->footer(
      "What it computes (docs/ANALYSIS.md has the definitions):\n"
      "  q-similarity  mean pairwise similarity of a head's queries over a window (the official TAPPA formula),\n"
      "                post-RoPE over the last --last-window tokens and pre/post-RoPE over sliding windows\n"
      "  patterns      from the attention rows of the last --rows positions: top-k stability, sink mass,\n"
      "                re-access, diagonal band, periodic offsets -> one label per head\n"
      "  RoPE          per-channel query/key energy, dominant channel, its wavelength 2*pi/theta\n"
      "  claim         Spearman correlation of q-similarity and top-k stability over all heads\n"
      "Interventions (the paper's two experiments): --rope-base B runs with another RoPE base,\n"
      "--swap-channels A,B gives channel A the frequency of channel B and vice versa; the report then\n"
      "compares against the unmodified model.\n\n"
      "Examples:\n"
      "  tappa analyze                                   # default model on the GPL-3 text, ./tappa-report\n"
      "  tappa analyze -f book.txt --max-tokens 4096 -o out/\n"
      "  tappa analyze --swap-channels 30,2 --max-tokens 1024\n\n"
      "Output: report.json and report.html are each written whole (temporary file + rename), so a crash or\n"
      "interruption never leaves a half-written report. SIGINT/SIGTERM stops the run after the current\n"
      "512-token chunk, writes nothing (a previous report in the folder stays as it was) and exits with\n"
      "128 + the signal number; a second signal kills it at once.");
  struct Opts {
    std::string model, file = kDefaultInput, prompt, out = "tappa-report", mode = "cosine";
    int max_tokens = 2048, generate = 0, last_window = 64, window = 1024, stride = 256, rows = 64, grid = 128,
        gallery = 8, threads = 0;
    double rope_base = 0;
    std::vector<int> swap;
    bool pearson_official = false, time_prefill = false, no_progress = false, all_maps = false;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("-f,--file", o->file, "Text to analyse")->capture_default_str();
  auto* prompt_opt = cmd->add_option("-p,--prompt", o->prompt, "Text given inline instead of -f");
  cmd->add_option("-o,--out", o->out, "Output folder for report.json, report.html and maps/")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "Analyse at most this many tokens of the text")
      ->capture_default_str()->check(CLI::Range(8, 1 << 20));
  cmd->add_option("--generate", o->generate, "Greedy tokens to generate after the text; their queries are analysed too")
      ->capture_default_str()->check(CLI::Range(0, 1 << 16));
  cmd->add_option("--mode", o->mode, "q-similarity mode: cosine dot euclidean l1 rbf pearson angular kl")->capture_default_str();
  cmd->add_flag("--pearson-official", o->pearson_official, "Pearson mode with the official code's extra /D scaling");
  cmd->add_option("--last-window", o->last_window, "Queries in the 'last W' q-similarity window")
      ->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--window", o->window, "Sliding-window length for q-similarity over the whole text")
      ->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--stride", o->stride, "Sliding-window stride")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--rows", o->rows, "Attention rows (last positions) measured per head")
      ->capture_default_str()->check(CLI::Range(2, 4096));
  cmd->add_option("--grid", o->grid, "Cells per side of the downsampled attention maps")
      ->capture_default_str()->check(CLI::Range(8, 1024));
  cmd->add_option("--gallery", o->gallery, "Heads shown in the report's gallery")->capture_default_str()->check(CLI::Range(0, 1000));
  cmd->add_option("--rope-base", o->rope_base, "Intervention: run with this RoPE base instead of the model's");
  cmd->add_option("--swap-channels", o->swap, "Intervention: A,B swaps the RoPE frequencies of channels A and B")
      ->delimiter(',')->expected(2);
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_flag("--time-prefill", o->time_prefill, "Also time a plain prefill of the same tokens (analysis overhead)");
  cmd->add_flag("--no-progress", o->no_progress, "No progress bar");
  cmd->add_flag("--all-maps", o->all_maps, "Write every head's attention-map PNGs to maps/, not only the gallery's");
  cmd->callback([o, prompt_opt, &rc] {
    // -p "" is an empty text, not a request for the default file.
    const bool inline_text = prompt_opt->count() > 0;
    const std::string text = inline_text ? o->prompt : read_file(o->file);
    if (text.empty()) throw Error(inline_text ? "the text given with -p is empty" : o->file + ": the text is empty");
    const auto model = Model::load(o->model);
    AnalysisOptions ao;
    ao.input_name = inline_text ? "(inline text)" : o->file;
    ao.max_tokens = o->max_tokens;
    ao.generate = o->generate;
    ao.qsim_mode = o->mode;
    ao.pearson_official_scaling = o->pearson_official;
    ao.last_window = o->last_window;
    ao.sliding_window = o->window;
    ao.sliding_stride = o->stride;
    ao.rows = o->rows;
    ao.grid = o->grid;
    ao.gallery = o->gallery;
    if (o->rope_base != 0) ao.rope_base = o->rope_base;
    if (!o->swap.empty()) ao.channel_swap = std::make_pair(o->swap[0], o->swap[1]);
    ao.n_threads = o->threads;
    ao.time_plain_prefill = o->time_prefill;
    ao.all_maps = o->all_maps;
    // The forward pass over a long text takes minutes: the first SIGINT/SIGTERM asks the analyzer to
    // stop between chunks instead of killing the process mid-write.
    const StopSignalScope stop_scope;
    // One bar per forward pass (an intervention runs the baseline first), ended as its pass ends.
    ProgressSink bars("analyze", "tok", !o->no_progress, /*finish_at_total=*/true);
    ao.on_pass = [&bars](const std::string& pass) { bars.restart(pass); };
    // The folder first: a path that cannot be a folder fails before minutes of work.
    std::filesystem::create_directories(std::filesystem::path(o->out) / "maps");
    nlohmann::json j;
    try {
      j = write_analysis_report(analyze_text(*model, text, ao, bars.control(&stop_token())), o->out);
    } catch (const Error&) {
      bars.finish();  // the interrupted pass's last line, before the message
      if (!stop_requested()) throw;
      std::fflush(stdout);
      std::fprintf(stderr, "tappa: analyze stopped by signal %d before the report was complete; nothing written to %s\n",
                   stop_signal_number(), o->out.c_str());
      rc = 128 + stop_signal_number();
      return;
    }

    std::printf("analysed %lld tokens of %s with %s\n", static_cast<long long>(j["input"]["n_tokens"].get<int64_t>()),
                ao.input_name.c_str(), o->model.c_str());
    std::printf("time: forward with observers %.2f s, analysis %.2f s", j["timing"]["prefill_s"].get<double>(),
                j["timing"]["analysis_s"].get<double>());
    if (!j["timing"]["plain_prefill_s"].is_null())
      std::printf(", plain prefill %.2f s", j["timing"]["plain_prefill_s"].get<double>());
    std::printf("\nheads per label:");
    for (const auto& [k, v] : j["label_counts"].items()) std::printf(" %s %d", k.c_str(), v.get<int>());
    std::printf("\nSpearman rank correlation over %d heads (q-similarity vs measured predictability):\n",
                j["correlation"]["n"].get<int>());
    for (const auto& row : j["correlation"]["table"])
      std::printf("  %-18s vs %-20s rho = %+.3f  (p = %.2g)\n", row["x"].get<std::string>().c_str(),
                  row["y"].get<std::string>().c_str(), row["spearman"].get<double>(), row["p_value"].get<double>());
    std::printf("prediction from q/k similarity and RoPE channels agrees with the measured label for %d of %d heads\n",
                j["agreement"]["n_agree"].get<int>(), j["agreement"]["n_heads"].get<int>());
    std::printf("report: %s\n", (std::filesystem::path(o->out) / "report.html").string().c_str());
    rc = 0;
  });
}

}  // namespace tappa::cli
