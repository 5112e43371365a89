// Fuzz target: the multiple-choice data set loaders of src/eval/mc_tasks.h (PIQA, ARC, WinoGrande,
// HellaSwag) on arbitrary text.
//
// Input: byte 0 picks the loader; the rest is the file text (for PIQA, the JSONL and the label file
// separated by the first NUL byte). Contract: every input either loads or throws tappa::Error with one
// line; what loads is usable as is by the scorer — every item has at least one choice, its gold index
// points at one of them, and acc_norm's length divisor is positive.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tappa/eval.h"
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
  std::vector<tappa::eval::McItem> items;
  try {
    switch (data[0] % 4) {
      case 0: {
        const size_t nul = text.find('\0');
        const std::string_view jsonl = text.substr(0, nul);
        const std::string_view labels = nul == std::string_view::npos ? std::string_view{} : text.substr(nul + 1);
        items = tappa::eval::parse_piqa(jsonl, labels);
        break;
      }
      case 1: items = tappa::eval::parse_arc(text); break;
      case 2: items = tappa::eval::parse_winogrande(text); break;
      case 3: items = tappa::eval::parse_hellaswag(text); break;
    }
  } catch (const tappa::Error& e) {
    const std::string msg = e.what();
    if (msg.empty() || msg.find('\n') != std::string::npos || msg.find('\r') != std::string::npos)
      fail("error message is empty or not one line", msg);
    return 0;
  }
  for (const tappa::eval::McItem& item : items) {
    if (item.choices.empty()) fail("item without choices", std::to_string(data[0] % 4));
    if (item.gold < 0 || static_cast<size_t>(item.gold) >= item.choices.size())
      fail("gold index outside the choices", std::to_string(item.gold));
    for (const tappa::eval::McChoice& c : item.choices)
      if (c.norm_len == 0) fail("choice with norm_len 0 (acc_norm would divide by zero)", c.continuation);
  }
  return 0;
}
