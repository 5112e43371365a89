// include/tappa/cpu.h over the dispatcher of src/backend/cpu.
#include "tappa/cpu.h"

#include "backend/cpu/dispatch.h"

namespace tappa {

const char* cpu_kernel_variant() { return cpu::cpu_variant(); }
std::string cpu_kernel_variants_supported() { return cpu::cpu_variants_supported(); }

}  // namespace tappa
