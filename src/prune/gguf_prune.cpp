#include "tappa/prune.h"

#include <charconv>
#include <set>

#include "tappa/error.h"

namespace tappa::prune {

namespace {

// Block index of a tensor named "blk.<n>.<rest>", or -1; `rest` receives "<rest>".
int block_of(const std::string& name, std::string& rest) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  int n = -1;
  const auto [p, ec] = std::from_chars(name.data() + 4, name.data() + dot, n);
  if (ec != std::errc() || p != name.data() + dot) return -1;
  rest = name.substr(dot + 1);
  return n;
}

}  // namespace

PruneSummary write_pruned_gguf(const GgufFile& in, const std::vector<int>& remove_layers, const std::string& out_path) {
  const auto arch = in.get_string("general.architecture");
  if (!arch) throw Error(in.path() + ": no general.architecture");
  const std::string count_key = *arch + ".block_count";
  const auto n_layer_u = in.get_u64(count_key);
  if (!n_layer_u) throw Error(in.path() + ": no " + count_key);
  const int n_layer = static_cast<int>(*n_layer_u);
  const std::set<int> removed(remove_layers.begin(), remove_layers.end());
  for (int l : removed)
    if (l < 0 || l >= n_layer)
      throw Error("cannot remove layer " + std::to_string(l) + ": the model has " + std::to_string(n_layer) + " layers");
  if (static_cast<int>(removed.size()) >= n_layer) throw Error("cannot remove every layer of the model");

  // Old index → new index (−1 when removed).
  std::vector<int> new_index(n_layer, -1);
  for (int l = 0, k = 0; l < n_layer; ++l)
    if (!removed.count(l)) new_index[l] = k++;

  PruneSummary summary;
  summary.n_layer_before = n_layer;
  summary.n_layer_after = n_layer - static_cast<int>(removed.size());

  std::vector<std::pair<std::string, GgufValue>> meta;
  for (const auto& [key, value] : in.metadata()) {
    if (key == "tappa.pruned_layers") continue;  // rewritten below (pruning a pruned file)
    if (key == count_key) {
      GgufValue v = value;
      if (std::holds_alternative<uint64_t>(v.data)) v.data = static_cast<uint64_t>(summary.n_layer_after);
      else v.data = static_cast<int64_t>(summary.n_layer_after);
      meta.emplace_back(key, std::move(v));
      continue;
    }
    // Per-layer arrays live under the architecture's prefix; the tokenizer's arrays never do.
    if (value.type == GgufType::ARRAY && key.rfind(*arch + ".", 0) == 0 &&
        static_cast<int>(value.as_array(key).values.size()) == n_layer) {
      const GgufArray& a = value.as_array(key);
      std::vector<GgufValue> kept;
      for (int l = 0; l < n_layer; ++l)
        if (new_index[l] >= 0) kept.push_back(a.values[l]);
      meta.emplace_back(key, GgufValue::array(a.element_type, std::move(kept)));
      summary.arrays_filtered.push_back(key);
      continue;
    }
    meta.emplace_back(key, value);
  }
  std::vector<GgufValue> pruned_list;
  for (int l : removed) pruned_list.push_back(GgufValue::i32(l));
  meta.emplace_back("tappa.pruned_layers", GgufValue::array(GgufType::INT32, std::move(pruned_list)));

  std::vector<GgufTensorToWrite> tensors;
  for (const GgufTensorInfo& t : in.tensors()) {
    std::string rest;
    const int b = block_of(t.name, rest);
    std::string name = t.name;
    if (b >= 0) {
      if (b >= n_layer) throw Error(in.path() + ": tensor " + t.name + " belongs to a block beyond " + count_key);
      if (new_index[b] < 0) {
        ++summary.n_tensors_removed;
        continue;
      }
      name = "blk." + std::to_string(new_index[b]) + "." + rest;
    }
    tensors.push_back({name, t.shape, t.type, t.data, t.n_bytes});
  }
  write_gguf(out_path, meta, tensors, in.alignment());
  return summary;
}

}  // namespace tappa::prune
