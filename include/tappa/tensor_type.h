// The GGML tensor element types that can appear in a GGUF file. The numeric values are the ones the
// GGUF format stores on disk (ggml_type), so they must never be renumbered.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tappa {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

// Layout of one type: elements per block and bytes per block. `known` is false for values that are
// not a ggml type at all; `supported` says whether tappa can compute with it.
struct TensorTypeInfo {
  std::string_view name;
  int64_t block_size = 0;
  size_t block_bytes = 0;
  bool known = false;
  bool supported = false;
};

// Never throws; unknown values give {name="unknown", known=false}.
TensorTypeInfo tensor_type_info(uint32_t raw_type);
inline TensorTypeInfo tensor_type_info(TensorType t) { return tensor_type_info(static_cast<uint32_t>(t)); }

}  // namespace tappa
