// Validation of a tensor's type and shape, and its size in bytes. Shared by the reader (hostile input)
// and the writer (caller mistakes), so both agree on which tensors are valid.
#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf_format.h"
#include "io/text.h"
#include "tappa/error.h"
#include "tappa/gguf.h"

namespace tappa::io {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += cat(i ? ", " : "", shape[i]);
  return s + "]";
}

}  // namespace

std::string tensor_layout_problem(uint32_t raw_type, const std::vector<int64_t>& shape, uint64_t* n_elements,
                                  uint64_t* n_bytes) {
  if (shape.empty() || shape.size() > kMaxDims)
    return cat("has ", shape.size(), " dimensions, must have 1 to ", kMaxDims);
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] <= 0) return cat("has dimension ", i, " of size ", shape[i], ", must be positive");

  // int64 because ggml's ne[] is int64: every count downstream must fit in it.
  int64_t count = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(count, d, &count))
      return cat("has shape ", shape_text(shape), " whose element count overflows int64");

  const TensorTypeInfo info = tensor_type_info(raw_type);
  if (!info.known) return cat("has unknown tensor type ", raw_type);
  if (info.block_size <= 0 || info.block_bytes == 0) return cat("has type ", info.name, " whose layout is unknown");
  if (shape[0] % info.block_size != 0)
    return cat("of type ", info.name, " has row length ", shape[0], ", not a multiple of the block size ",
               info.block_size);

  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(count / info.block_size), static_cast<uint64_t>(info.block_bytes),
                             &bytes) ||
      bytes > static_cast<uint64_t>(INT64_MAX))
    return cat("of type ", info.name, " with shape ", shape_text(shape), " has a size in bytes that overflows");

  *n_elements = static_cast<uint64_t>(count);
  *n_bytes = bytes;
  return {};
}

}  // namespace tappa::io

namespace tappa {

uint64_t tensor_n_bytes(TensorType type, const std::vector<int64_t>& shape, std::string_view name) {
  uint64_t n_elements = 0, n_bytes = 0;
  const std::string problem = io::tensor_layout_problem(static_cast<uint32_t>(type), shape, &n_elements, &n_bytes);
  if (!problem.empty()) throw Error(io::cat("tensor ", io::quoted(name), " ", problem));
  return n_bytes;
}

}  // namespace tappa
