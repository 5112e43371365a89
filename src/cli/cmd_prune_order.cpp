// tappa prune-order — which layers to remove first: ShortGPT (ascending BI) or TAPPA
// (ascending BI' = BI_norm + beta(1 - qsim_norm)), from calibration scores (include/tappa/prune.h).
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "tappa/error.h"
#include "tappa/files.h"
#include "tappa/prune.h"

namespace tappa::cli {

void register_prune_order(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("prune-order", "Layer prune order: ShortGPT (BI) or TAPPA (BI + beta*(1 - q-sim))");
  cmd->footer(
      "Scores: --scores FILE (tappa calibrate's output) or --bi FILE and --qsim FILE (official raw-score\n"
      "files: {\"score_type\", \"scores\", ...}). Both are min-max normalised over layers; BI' = BI_norm +\n"
      "beta*(1 - qsim_norm); layers are listed by ascending BI' (ties: lower index first). --method\n"
      "shortgpt ranks by raw BI. Layers are 0-based. The paper's beta: Llama-2-7B 0.2, Llama-3.1-8B 0.3,\n"
      "Qwen-2.5-7B 0.1.\n\n"
      "Examples:\n"
      "  tappa prune-order --scores scores.json --beta 0.2 -o tappa_b0.2.json\n"
      "  tappa prune-order --scores scores.json --method shortgpt -o shortgpt.json\n"
      "  tappa prune-order --bi llama2_bi.json --qsim llama2_qsim.json --beta 0.2 --show 10,11\n"
      "  tappa prune -m model.gguf --order tappa_b0.2.json --layers 4 -o pruned.gguf");
  struct Opts {
    std::string scores, bi, qsim, method = "tappa", out, show;
    double beta = 0.2;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--scores", o->scores, "tappa calibrate output holding both scores");
  cmd->add_option("--bi", o->bi, "Block Influence file (official raw-score layout)");
  cmd->add_option("--qsim", o->qsim, "q-similarity file (official raw-score layout)");
  cmd->add_option("--method", o->method, "tappa or shortgpt")->capture_default_str()->check(CLI::IsMember({"tappa", "shortgpt"}));
  cmd->add_option("--beta", o->beta, "Weight of 1 - q-sim (tappa)")->capture_default_str()->check(finite_range(-1e6, 1e6));
  cmd->add_option("--show", o->show, "Also print the removed set for these depths, e.g. 1-7 or 10,11");
  cmd->add_option("-o,--output", o->out, "Write the order as JSON (tappa prune --order reads it)");
  cmd->callback([o, &rc] {
    const std::string bi_file = o->bi.empty() ? o->scores : o->bi;
    const std::string q_file = o->qsim.empty() ? o->scores : o->qsim;
    if (bi_file.empty()) throw Error("give --scores FILE, or --bi FILE (and --qsim FILE for tappa)");
    const std::vector<double> bi = prune::parse_scores_text(read_file(bi_file), "bi", bi_file);
    std::vector<double> qsim, combined = bi;
    std::vector<int> order;
    if (o->method == "tappa") {
      if (q_file.empty()) throw Error("--method tappa needs q-similarity scores (--qsim FILE or --scores FILE)");
      qsim = prune::parse_scores_text(read_file(q_file), "qsim", q_file);
      combined = prune::tappa_scores(bi, qsim, o->beta);
      order = prune::ascending_order(combined);
    } else {
      order = prune::shortgpt_order(bi);
    }
    if (o->method == "tappa") std::printf("tappa order (beta %g): ", o->beta);
    else std::printf("shortgpt order: ");
    for (int l : order) std::printf("%d ", l);
    std::printf("\n");
    const std::vector<int> depths = prune::parse_layer_list(o->show, static_cast<int>(order.size()) + 1);
    nlohmann::json removed = nlohmann::json::object();
    for (int n : depths) {
      const std::vector<int> set = prune::first_n_sorted(order, n);
      std::printf("n=%d: %s\n", n, prune::format_layer_list(set).c_str());
      removed[std::to_string(n)] = set;
    }
    if (!o->out.empty()) {
      nlohmann::json j = {{"method", o->method}, {"order", order}, {"scores", combined}, {"bi", bi},
                          {"bi_file", bi_file}, {"layers", "0-based"}};
      if (o->method == "tappa") {
        j["beta"] = o->beta;
        j["qsim"] = qsim;
        j["qsim_file"] = q_file;
      }
      if (!depths.empty()) j["removed"] = removed;
      atomic_write(o->out, j.dump(2) + "\n");
    }
    rc = 0;
  });
}

}  // namespace tappa::cli
