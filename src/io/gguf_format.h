// Facts about the GGUF encoding shared by the reader and the writer, so that both sides agree on
// what a valid file is (anything write_gguf accepts, GgufFile::open accepts back).
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tappa/gguf.h"
#include "tappa/tensor_type.h"

namespace tappa::io {

// The format is little-endian and the code reads fields with memcpy, so it needs a little-endian host.
static_assert(std::endian::native == std::endian::little, "tappa's GGUF code assumes a little-endian host");

inline constexpr char kGgufMagic[4] = {'G', 'G', 'U', 'F'};
inline constexpr uint32_t kGgufWriteVersion = 3;
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr std::string_view kAlignmentKey = "general.alignment";
inline constexpr size_t kHeaderBytes = 4 + 4 + 8 + 8;  // magic, version, tensor count, kv count
inline constexpr uint32_t kMaxDims = 4;                // GGML_MAX_DIMS
inline constexpr int kMaxArrayNesting = 16;            // arrays inside arrays; real files use 1
// Metadata values are held as GgufValue (~48 bytes each) however small they are on disk, so a file of
// N bytes could otherwise ask for ~48N bytes of memory. Real vocabularies need about a million values.
inline constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 24;

// Smallest encodings, used to reject counts that the remaining bytes cannot possibly hold before any
// memory is reserved for them.
inline constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;  // key length, non-empty key, type, 1-byte value
inline constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name, n_dims, one dim, type, offset

inline bool is_valid_value_type(uint32_t raw) { return raw <= static_cast<uint32_t>(GgufType::FLOAT64); }

// Encoded size of a fixed-size value type; 0 for STRING and ARRAY.
inline size_t fixed_value_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    case GgufType::STRING: case GgufType::ARRAY: return 0;
  }
  return 0;
}

// Fewest bytes one value of type t can take on disk.
inline uint64_t min_value_size(GgufType t) {
  if (t == GgufType::STRING) return 8;      // the length, for an empty string
  if (t == GgufType::ARRAY) return 4 + 8;   // element type and count, for an empty array
  return fixed_value_size(t);
}

inline bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// x rounded up to a multiple of `alignment` (a power of two); false on overflow.
inline bool align_up(uint64_t x, uint64_t alignment, uint64_t* out) {
  uint64_t bumped = 0;
  if (__builtin_add_overflow(x, alignment - 1, &bumped)) return false;
  *out = bumped & ~(alignment - 1);
  return true;
}

// Checks a tensor's type and shape. On success fills n_elements and n_bytes and returns "";
// otherwise returns the problem as a phrase that follows "tensor 'name' ".
std::string tensor_layout_problem(uint32_t raw_type, const std::vector<int64_t>& shape, uint64_t* n_elements,
                                  uint64_t* n_bytes);

// Lets unordered_map<std::string, ...> be searched with a string_view without building a string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace tappa::io
