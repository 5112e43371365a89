// Which CPU kernels this process runs. The kernels are compiled for several instruction sets and
// the best one the CPU supports is picked at run time (docs/ARCHITECTURE.md, "CPU kernels");
// TAPPA_CPU_VARIANT pins one. `tappa info` and `tappa bench` print it, and a benchmark result is only
// comparable with another of the same variant.
#pragma once
#include <string>

namespace tappa {

// The variant in use ("scalar", "avx2", "avx512"), picked on the first call. Throws tappa::Error when
// TAPPA_CPU_VARIANT names a variant that is unknown, not built in, or not supported by this CPU.
const char* cpu_kernel_variant();

// The variants this binary carries and this CPU can run, best last, e.g. "scalar avx2 avx512".
std::string cpu_kernel_variants_supported();

}  // namespace tappa
