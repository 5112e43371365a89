// Fuzz target: the GGUF reader on arbitrary bytes, then Model::load on the same file.
//
// Contract under test (include/tappa/gguf.h, include/tappa/model.h): any file either opens or throws
// tappa::Error with a one-line message naming the file — never a crash, an out-of-bounds read, undefined
// behaviour, a hang or an allocation far larger than the file. Every accessor of an opened file must
// then be safe too, so they are all exercised, including a read of each tensor's first and last byte
// (which ASan checks against the mapping).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_util.h"
#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/model.h"

namespace {

void require_one_line_naming(const tappa::Error& e, const std::string& path) {
  const std::string msg = e.what();
  // The path may itself not contain a newline (it is ours), so any newline is from the message.
  if (msg.find('\n') != std::string::npos || msg.find(path) == std::string::npos) {
    std::fprintf(stderr, "bad error message: %s\n", msg.c_str());
    std::abort();
  }
}

uint64_t touch(const tappa::GgufFile& f) {
  uint64_t sum = f.version() + f.alignment() + f.data_offset();
  for (const auto& [key, value] : f.metadata()) {
    sum += value.to_display_string().size();
    if (f.find(key) == nullptr) std::abort();  // every listed key must be found
    try {
      sum += f.get_u64(key).value_or(0);
    } catch (const tappa::Error&) {
    }
    try {
      sum += f.get_string(key).value_or("").size();
    } catch (const tappa::Error&) {
    }
  }
  for (const tappa::GgufTensorInfo& t : f.tensors()) {
    if (f.find_tensor(t.name) != &t) std::abort();
    if (t.data == nullptr || t.n_bytes == 0) std::abort();  // every dimension is positive
    sum += t.data[0] + t.data[t.n_bytes - 1] + static_cast<uint64_t>(t.rows()) + t.n_elements;
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = tappa::fuzz::scratch_path("gguf");
  tappa::fuzz::write_file(path, data, size);
  try {
    const tappa::GgufFile f = tappa::GgufFile::open(path);
    volatile uint64_t sink = touch(f);
    (void)sink;
  } catch (const tappa::Error& e) {
    require_one_line_naming(e, path);
    return 0;  // Model::load would fail the same way
  }
  try {
    const auto model = tappa::Model::load(path);
    volatile int sink = model->config().n_layer + model->tokenizer().n_vocab();
    (void)sink;
  } catch (const tappa::Error& e) {
    require_one_line_naming(e, path);  // the loader and the tokenizer name the file too
  }
  return 0;
}
