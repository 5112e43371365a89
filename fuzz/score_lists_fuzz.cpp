// Fuzz target: the layer-list, prune-order and score-file readers of src/prune/layer_list.h (what
// `tappa prune` and `prune-order` read from users and from calibration/score JSON files).
//
// Input: byte 0 picks the reader (and n_layer for layer lists), the rest is the text. Contract: each
// input is read or rejected with one tappa::Error line; a layer list comes back sorted, without
// duplicates and inside [0, n_layer); a prune order holds distinct non-negative indices; and a list
// formatted by format_layer_list reads back to itself.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tappa/prune.h"
#include "tappa/error.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "%s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const int n_layer = data[0] >> 2;  // 0 (no bound) .. 63
  try {
    switch (data[0] & 3) {
      case 0: {
        const std::vector<int> layers = tappa::prune::parse_layer_list(text, n_layer);
        for (size_t i = 0; i < layers.size(); ++i) {
          if (layers[i] < 0 || (n_layer > 0 && layers[i] >= n_layer)) fail("layer outside the range", std::to_string(layers[i]));
          if (i > 0 && layers[i] <= layers[i - 1]) fail("layer list not sorted and unique", std::string(text));
        }
        if (tappa::prune::parse_layer_list(tappa::prune::format_layer_list(layers), n_layer) != layers)
          fail("format_layer_list does not read back", std::string(text));
        break;
      }
      case 1: {
        const std::vector<int> order = tappa::prune::parse_order_text(text);
        std::set<int> seen;
        for (int l : order)
          if (l < 0 || !seen.insert(l).second) fail("order with a negative or repeated layer", std::to_string(l));
        break;
      }
      default: {
        const std::vector<double> scores = tappa::prune::parse_scores_text(text, (data[0] & 3) == 2 ? "bi" : "qsim");
        volatile size_t sink = scores.size();
        (void)sink;
        break;
      }
    }
  } catch (const tappa::Error& e) {
    const std::string msg = e.what();
    if (msg.empty() || msg.find('\n') != std::string::npos || msg.find('\r') != std::string::npos)
      fail("error message is empty or not one line", msg);
  }
  return 0;
}
