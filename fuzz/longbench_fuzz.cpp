// Fuzz target: the LongBench JSONL reader of src/evalkv/longbench.h on arbitrary files.
//
// Contract: read_longbench_file either returns records or throws tappa::Error with one line that
// names the file (and the line); parse_longbench_line on each line agrees with it. Every record it
// returns has at least one answer (the metrics take the best score over the answers) and a length
// that is not negative.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "evalkv/longbench.h"
#include "fuzz_util.h"
#include "tappa/error.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "%s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = tappa::fuzz::scratch_path("longbench");
  tappa::fuzz::write_file(path, data, size);
  std::vector<tappa::evalkv::LongBenchRecord> records;
  try {
    records = tappa::evalkv::read_longbench_file(path);
  } catch (const tappa::Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(path + ":", 0) != 0) fail("error message does not start with the file name", msg);
    if (msg.find('\n') != std::string::npos || msg.find('\r') != std::string::npos)
      fail("error message is not one line", msg);
    return 0;
  }
  for (const tappa::evalkv::LongBenchRecord& r : records) {
    if (r.answers.empty()) fail("record without answers", r.id);
    if (r.length < 0) fail("negative length", r.id);
  }
  // A single line on its own must parse the same way as inside the file.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string_view first = text.substr(0, text.find('\n'));
  if (first.find_first_not_of(" \t\r") != std::string_view::npos) {
    const tappa::evalkv::LongBenchRecord r = tappa::evalkv::parse_longbench_line(first);
    if (r.context != records.front().context || r.answers != records.front().answers)
      fail("parse_longbench_line disagrees with read_longbench_file on the first line", r.id);
  }
  return 0;
}
