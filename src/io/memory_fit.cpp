#include "io/memory_fit.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/text.h"
#include "tappa/error.h"
#include "tappa/gguf.h"

namespace tappa::io {

namespace {

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

uint64_t physical_memory_bytes() {
  if (const char* env = std::getenv("TAPPA_MEMORY_BYTES"); env && *env) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0)
      throw Error(cat("TAPPA_MEMORY_BYTES must be a positive number of bytes, got ", quoted(env)));
    return v;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return UINT64_MAX;  // unknown: do not refuse anything
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

void check_fits_in_memory(const GgufFile& file) {
  uint64_t bytes = 0;
  for (const GgufTensorInfo& t : file.tensors()) bytes += t.n_bytes;  // each fits in the file, so no overflow
  const uint64_t memory = physical_memory_bytes();
  if (bytes > memory)
    throw Error(cat(file.path(), ": the model's tensors take ", gib(bytes), " but this machine has ", gib(memory),
                    " of memory; every token would read the weights from disk again (set TAPPA_MEMORY_BYTES to "
                    "override)"));
}

}  // namespace tappa::io
