// Refusing a model that cannot fit in this machine's memory, before any weight is touched.
//
// Weights are mapped, not read, so opening a 200 GB file "works" and the trouble starts later: every
// generated token pages the whole file in again, and the run crawls or the machine swaps itself to a
// halt. Comparing the tensor bytes with physical memory up front turns that into one clear error.
#pragma once
#include <cstdint>

namespace tappa {
class GgufFile;
}

namespace tappa::io {

// Physical memory of this machine in bytes (sysconf); $TAPPA_MEMORY_BYTES overrides it, so that the
// check can be tested and a user who knows better (a machine with fast swap) can raise it.
uint64_t physical_memory_bytes();

// Throws tappa::Error "<path>: the model's tensors take X GiB but this machine has Y GiB of memory ..."
// when the file's tensor data is larger than physical memory.
void check_fits_in_memory(const GgufFile& file);

}  // namespace tappa::io
