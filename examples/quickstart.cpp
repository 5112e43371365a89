// The public API in one program (include/tappa only, as an outside project would use it): load a
// model, generate with TAPPA's compressed KV cache and read the budget each layer got, analyse a text
// and read per-head q-similarity, prune two layers into a new GGUF and load it back.
//
//   build/examples/quickstart [MODEL.gguf] [TEXT_FILE] [OUT_DIR]
//
// ctest example_quickstart runs it on the default model and checks what it prints: the program
// exits non-zero when a result is not what the API promises (budgets that do not add up to the
// requested average, a q-similarity out of range, a pruned file without two fewer layers).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tappa/analysis.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/generate.h"
#include "tappa/kv.h"
#include "tappa/model.h"
#include "tappa/prune.h"

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw tappa::Error(tappa::ErrorCode::bad_file, path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) try {
  namespace fs = std::filesystem;
  const std::string model_path = argc > 1 ? argv[1] : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const std::string text_path = argc > 2 ? argv[2] : "/usr/share/common-licenses/GPL-3";
  const fs::path out_dir = argc > 3 ? fs::path(argv[3]) : fs::temp_directory_path() / "tappa_quickstart";
  fs::create_directories(out_dir);

  // 1. Load. The engine shares ownership of the model.
  const std::shared_ptr<tappa::Model> model = tappa::Model::load(model_path);
  const tappa::ModelConfig& c = model->config();
  std::printf("model %s: %d layers, %d query heads, %d KV heads\n", c.name.c_str(), c.n_layer, c.n_head, c.n_head_kv);

  // 2. Generate with the KV method "tappa" at a budget of 256 tokens per layer on average: a prompt
  //    of ~1000 tokens is compressed as it is prefilled, layer by layer.
  const std::string text = slurp(text_path);
  std::vector<int32_t> prompt = model->tokenizer().encode(text, /*add_special=*/true, /*parse_special=*/false);
  prompt.resize(std::min<size_t>(prompt.size(), 1000));
  tappa::EngineOptions eo;
  eo.n_ctx = 1100;
  eo.n_threads = 2;
  tappa::Engine engine(model, eo);
  tappa::GenerateOptions go;
  go.max_tokens = 16;
  go.kv.method = "tappa";
  go.kv.budget = 256;
  const tappa::GenerateResult gen = tappa::generate(engine, prompt, go);
  std::printf("generated %zu tokens: %s\n", gen.tokens.size(), gen.text.c_str());
  expect(gen.kv.has_value() && gen.kv->compressed, "the tappa method compressed the prompt");
  if (gen.kv) {
    const tappa::KvRecord& rec = *gen.kv;
    long budget_sum = 0;
    std::printf("per-layer budgets (tokens per KV head, window included):");
    for (const tappa::KvLayerRecord& l : rec.layers) {
      std::printf(" %d", l.budget);
      budget_sum += l.budget;
    }
    std::printf("\n");
    expect(static_cast<int>(rec.layers.size()) == c.n_layer, "one budget per layer");
    // The budget is an average over layers: the allocator moves tokens between layers (by their
    // q-similarity) but the total stays 256 per layer (docs/KV_COMPRESSION.md).
    expect(budget_sum == 256L * c.n_layer,
           "the layer budgets add up to 256 x " + std::to_string(c.n_layer) + " (got " + std::to_string(budget_sum) + ")");
    expect(rec.bytes_held_after < rec.bytes_held_before, "the compressed cache holds fewer bytes than the full one");
  }

  // 3. Analyse the first 512 tokens of the same text; the result is in memory.
  tappa::AnalysisOptions ao;
  ao.max_tokens = 512;
  ao.n_threads = 2;
  const tappa::AnalysisResult an = tappa::analyze_text(*model, text, ao);
  expect(an.heads.size() == static_cast<size_t>(c.n_layer) * c.n_head, "one analysis per (layer, head)");
  bool in_range = true;
  for (const tappa::HeadAnalysis& h : an.heads) in_range = in_range && std::fabs(h.qsim_pre_last) <= 1.0 + 1e-9;
  expect(in_range, "cosine q-similarity of every head is within [-1, 1]");
  const tappa::HeadAnalysis& h0 = an.heads[0];
  std::printf("layer 0 head 0: q-sim (pre-RoPE, last %d) %.3f, label %s, predicted %s\n", ao.last_window, h0.qsim_pre_last,
              h0.label.c_str(), h0.predicted_label.c_str());

  // 4. Prune the two layers TAPPA's order ranks first (q-similarity of the analysis, BI left out: a
  //    real run calibrates with tappa::prune::run_calibration) and load the smaller model.
  std::vector<double> layer_qsim;
  for (const tappa::LayerAnalysis& l : an.layers) layer_qsim.push_back(l.qsim_pre_last);
  const std::vector<int> order = tappa::prune::descending_order(layer_qsim);
  const std::vector<int> removed = tappa::prune::first_n_sorted(order, 2);
  const std::string pruned_path = (out_dir / "pruned.gguf").string();
  const tappa::prune::PruneSummary ps = tappa::prune::write_pruned_gguf(model->file(), removed, pruned_path);
  const auto pruned = tappa::Model::load(pruned_path);
  std::printf("pruned layers %s: %d -> %d layers\n", tappa::prune::format_layer_list(removed).c_str(), ps.n_layer_before,
              pruned->config().n_layer);
  expect(pruned->config().n_layer == c.n_layer - 2, "the pruned GGUF loads with two fewer layers");
  fs::remove(pruned_path);

  std::printf("%s\n", failures == 0 ? "quickstart: all checks passed" : "quickstart: some checks FAILED");
  return failures == 0 ? 0 : 1;
} catch (const tappa::Error& e) {
  std::fprintf(stderr, "quickstart: error: %s\n", e.what());
  return 1;
}
