// Writing a whole file so that readers never see it half written: the bytes go to a temporary file
// in the same directory ("<path>.tmp.<pid>.<n>"), are flushed to disk, and the temporary is renamed
// over `path`. On any failure the temporary is removed, `path` is left as it was, and tappa::Error
// names the file and the reason.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tappa::report {

void atomic_write(const std::string& path, std::string_view data);
void atomic_write(const std::string& path, std::span<const uint8_t> data);

}  // namespace tappa::report
