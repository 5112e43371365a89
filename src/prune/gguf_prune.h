// Writing a pruned model: the same GGUF with some transformer blocks deleted. The remaining blocks
// are renumbered densely (blk.7 becomes blk.6 after removing one earlier block) — the GGUF analogue of
// the official code's layer-list deletion with layer_idx renumbering — `<arch>.block_count` is
// lowered, every per-layer metadata array (`<arch>.*` arrays with one entry per block, e.g. per-layer
// head counts) loses the removed entries, and `tappa.pruned_layers` records the original indices.
// Tensor bytes are copied unchanged, so the pruned file computes exactly what the original computes
// with those layers skipped.
#pragma once
#include <string>
#include <vector>

#include "tappa/gguf.h"

namespace tappa::prune {

struct PruneSummary {
  int n_layer_before = 0;
  int n_layer_after = 0;
  int n_tensors_removed = 0;
  std::vector<std::string> arrays_filtered;  // per-layer metadata keys that were shortened
};

// Writes `out_path` (atomically). Throws tappa::Error when an index is out of range, all layers
// would go, or the file has no `<arch>.block_count`.
PruneSummary write_pruned_gguf(const GgufFile& in, const std::vector<int>& remove_layers, const std::string& out_path);

}  // namespace tappa::prune
