// tappa prune — write a GGUF with transformer blocks removed (include/tappa/prune.h).
#include <cstdio>
#include <memory>

#include "cli/common.h"
#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/prune.h"

namespace tappa::cli {

void register_prune(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("prune", "Write a GGUF with layers removed (loads in tappa and llama.cpp)");
  cmd->footer(
      "Either --order FILE --layers N (the first N layers of a prune order: tappa prune-order's JSON, an\n"
      "official raw-score file's prune_order, or a plain list) or --remove LIST. The remaining blocks are\n"
      "renumbered, <arch>.block_count and per-layer metadata arrays are updated, tensor bytes are copied\n"
      "unchanged, and tappa.pruned_layers records what was removed. The same model without writing a\n"
      "file: --skip-layers LIST on run, ppl and eval-mc.\n\n"
      "Examples:\n"
      "  tappa prune --order tappa_b0.2.json --layers 4 -o smol-26L.gguf\n"
      "  tappa prune --remove 20-23 -o smol-26L.gguf\n"
      "  tappa run -m smol-26L.gguf -p \"The capital of France is\" -n 16");
  struct Opts {
    std::string model, order, remove, out;
    int layers = -1;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("--order", o->order, "Prune-order file");
  cmd->add_option("--layers", o->layers, "How many layers of --order to remove")->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--remove", o->remove, "Layers to remove, e.g. 3,5,20-23");
  cmd->add_option("-o,--output", o->out, "Output GGUF")->required();
  cmd->callback([o, &rc] {
    if (o->order.empty() == o->remove.empty()) throw Error("give either --order FILE --layers N or --remove LIST");
    const GgufFile in = GgufFile::open(o->model);
    std::vector<int> remove;
    if (!o->order.empty()) {
      if (o->layers < 0) throw Error("--order needs --layers N");
      remove = prune::first_n_sorted(prune::parse_order_text(read_file(o->order), o->order), o->layers);
    } else {
      remove = prune::parse_layer_list(o->remove);
    }
    if (o->out == o->model) throw Error("the output must not overwrite the input model");
    const prune::PruneSummary s = prune::write_pruned_gguf(in, remove, o->out);
    std::printf("removed layers %s: %d -> %d blocks, %d tensors dropped%s; wrote %s\n",
                prune::format_layer_list(remove).c_str(), s.n_layer_before, s.n_layer_after, s.n_tensors_removed,
                s.arrays_filtered.empty() ? "" : (", per-layer arrays updated: " + std::to_string(s.arrays_filtered.size())).c_str(),
                o->out.c_str());
    rc = 0;
  });
}

}  // namespace tappa::cli
