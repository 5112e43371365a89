// Writing result files so that a reader never sees one half written — the reports, checkpoints and
// pruned models of long jobs, which a crash or ^C must leave either as they were or complete. The
// bytes go to a temporary file in the same directory ("<path>.tmp.<pid>.<n>"), are flushed to disk,
// and the temporary is renamed over `path`. On any failure the temporary is removed, `path` is left
// as it was, and tappa::Error names the file and the reason.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tappa {

void atomic_write(const std::string& path, std::string_view data);
void atomic_write(const std::string& path, std::span<const uint8_t> data);

}  // namespace tappa
