// The block layout of every ggml tensor type that a GGUF file can name.
//
// Sizes are the on-disk block sizes of ggml's block structs (ggml-common.h). Types that tappa cannot
// compute with still get their real layout, so a file that uses them can be opened and inspected
// (`tappa info`) and fails only when a computation needs the tensor.
#include "tappa/tensor_type.h"

namespace tappa {

namespace {

constexpr int64_t kQK = 32;    // elements per block of the "legacy" quants (Q4_0 .. Q8_1, IQ4_NL, MXFP4)
constexpr int64_t kQK_K = 256;  // elements per super-block of the k-quants and most i-quants

constexpr TensorTypeInfo known(std::string_view name, int64_t block_size, size_t block_bytes, bool supported) {
  return TensorTypeInfo{name, block_size, block_bytes, true, supported};
}

}  // namespace

TensorTypeInfo tensor_type_info(uint32_t raw_type) {
  // A switch rather than a table: the values have gaps (removed types) and the compiler checks
  // that no value appears twice.
  switch (raw_type) {
    case 0: return known("F32", 1, 4, true);
    case 1: return known("F16", 1, 2, true);
    case 2: return known("Q4_0", kQK, 18, true);
    case 3: return known("Q4_1", kQK, 20, true);
    case 6: return known("Q5_0", kQK, 22, false);
    case 7: return known("Q5_1", kQK, 24, false);
    case 8: return known("Q8_0", kQK, 34, true);
    case 9: return known("Q8_1", kQK, 36, false);
    case 10: return known("Q2_K", kQK_K, 84, false);
    case 11: return known("Q3_K", kQK_K, 110, false);
    case 12: return known("Q4_K", kQK_K, 144, true);
    case 13: return known("Q5_K", kQK_K, 176, true);
    case 14: return known("Q6_K", kQK_K, 210, true);
    case 15: return known("Q8_K", kQK_K, 292, true);
    case 16: return known("IQ2_XXS", kQK_K, 66, false);
    case 17: return known("IQ2_XS", kQK_K, 74, false);
    case 18: return known("IQ3_XXS", kQK_K, 98, false);
    case 19: return known("IQ1_S", kQK_K, 50, false);
    case 20: return known("IQ4_NL", kQK, 18, false);
    case 21: return known("IQ3_S", kQK_K, 110, false);
    case 22: return known("IQ2_S", kQK_K, 82, false);
    case 23: return known("IQ4_XS", kQK_K, 136, false);
    case 24: return known("I8", 1, 1, false);
    case 25: return known("I16", 1, 2, false);
    case 26: return known("I32", 1, 4, false);
    case 27: return known("I64", 1, 8, false);
    case 28: return known("F64", 1, 8, false);
    case 29: return known("IQ1_M", kQK_K, 56, false);
    case 30: return known("BF16", 1, 2, true);
    case 34: return known("TQ1_0", kQK_K, 54, false);
    case 35: return known("TQ2_0", kQK_K, 66, false);
    case 39: return known("MXFP4", kQK, 17, false);
    default: return TensorTypeInfo{"unknown", 0, 0, false, false};
  }
}

}  // namespace tappa
