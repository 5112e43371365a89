// Reading (and writing) GGUF files, versions 2 and 3.
//
// GgufFile maps the file read-only and never copies tensor data: a tensor's bytes are a pointer into
// the mapping. Every count, length, offset and size in the header is checked against the file size
// before it is used, so a truncated or hostile file produces a tappa::Error naming the file and the
// problem instead of a crash or an allocation of absurd size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "tappa/tensor_type.h"

namespace tappa {

// On-disk metadata value types (gguf_type).
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
std::string_view gguf_type_name(GgufType t);

struct GgufValue;
// An array keeps its element type so that an empty array still says what it holds; nested arrays
// are arrays of GgufValue.
struct GgufArray {
  GgufType element_type = GgufType::UINT8;
  std::vector<GgufValue> values;
};

// Which alternative of `data` each type uses: UINT8/16/32/64 -> uint64_t, INT8/16/32/64 -> int64_t,
// FLOAT32/64 -> double, BOOL -> bool, STRING -> std::string, ARRAY -> GgufArray. The reader always
// produces exactly that; write_gguf also accepts the other integer alternative when the value fits.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> data;

  // Builders that pair the type with the matching alternative (GgufValue stays an aggregate).
  static GgufValue u8(uint8_t v) { return {GgufType::UINT8, uint64_t{v}}; }
  static GgufValue i8(int8_t v) { return {GgufType::INT8, int64_t{v}}; }
  static GgufValue u16(uint16_t v) { return {GgufType::UINT16, uint64_t{v}}; }
  static GgufValue i16(int16_t v) { return {GgufType::INT16, int64_t{v}}; }
  static GgufValue u32(uint32_t v) { return {GgufType::UINT32, uint64_t{v}}; }
  static GgufValue i32(int32_t v) { return {GgufType::INT32, int64_t{v}}; }
  static GgufValue u64(uint64_t v) { return {GgufType::UINT64, v}; }
  static GgufValue i64(int64_t v) { return {GgufType::INT64, v}; }
  static GgufValue f32(float v) { return {GgufType::FLOAT32, double{v}}; }
  static GgufValue f64(double v) { return {GgufType::FLOAT64, v}; }
  static GgufValue boolean(bool v) { return {GgufType::BOOL, v}; }
  static GgufValue str(std::string v) { return {GgufType::STRING, std::move(v)}; }
  static GgufValue array(GgufType element_type, std::vector<GgufValue> values) {
    return {GgufType::ARRAY, GgufArray{element_type, std::move(values)}};
  }
  static GgufValue string_array(const std::vector<std::string>& values);

  // Typed accessors. They throw tappa::Error (naming `what`, usually the key) when the stored type does
  // not fit: any integer type converts to the requested integer type if the value is in range.
  uint64_t as_u64(std::string_view what = "value") const;
  int64_t as_i64(std::string_view what = "value") const;
  double as_f64(std::string_view what = "value") const;  // any integer or float type
  bool as_bool(std::string_view what = "value") const;
  const std::string& as_string(std::string_view what = "value") const;
  const GgufArray& as_array(std::string_view what = "value") const;
  std::string to_display_string(size_t max_items = 8) const;  // short human-readable form for `tappa info`
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // ggml order: shape[0] is the contiguous (row) dimension
  TensorType type = TensorType::F32;
  uint64_t offset = 0;        // relative to the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
  int64_t rows() const;           // product of shape[1..]
  int64_t row_length() const { return shape.empty() ? 1 : shape[0]; }
};

class GgufFile {
 public:
  // Opens and validates `path`. Throws tappa::Error on any problem. The mapping lives as long as the
  // GgufFile (moves keep it; pointers into it stay valid).
  static GgufFile open(const std::string& path);
  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& path() const;
  uint32_t version() const;
  uint64_t alignment() const;
  uint64_t data_offset() const;  // absolute offset of the data section in the file
  uint64_t file_size() const;

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const;
  const GgufValue* find(std::string_view key) const;  // nullptr when absent
  const GgufValue& get(std::string_view key) const;   // throws "missing metadata key <key>"

  // Convenience lookups with defaults.
  std::optional<uint64_t> get_u64(std::string_view key) const;
  std::optional<double> get_f64(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr when absent
  const GgufTensorInfo& tensor(std::string_view name) const;       // throws when absent

 private:
  struct Impl;
  explicit GgufFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Writes a GGUF v3 file: metadata in the given order, then tensor infos, then data aligned to
// `alignment` (general.alignment is written when it differs from 32). Tensor data is copied from the
// given pointers. Used by layer pruning and by tests that build small models.
struct GgufTensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  TensorType type = TensorType::F32;
  const void* data = nullptr;
  uint64_t n_bytes = 0;
};

// Bytes that a tensor of this type and shape takes. Throws tappa::Error (naming `name`) when the type
// is unknown, the shape has not 1..4 positive dimensions, shape[0] is not a multiple of the block size,
// or the size overflows.
uint64_t tensor_n_bytes(TensorType type, const std::vector<int64_t>& shape, std::string_view name = "tensor");

// Throws tappa::Error when `alignment` is not a power of two or when a key, a tensor name or a value is
// invalid (empty or duplicate key or name, a value whose alternative does not fit its type, arrays
// nested deeper than 16 levels, n_bytes differing from tensor_n_bytes, general.alignment in
// `metadata` that is not a uint32 equal to `alignment`). A general.alignment already in `metadata` is
// kept where it is. Tensors are laid out in the given order, each at the next multiple of `alignment`,
// and the last one is zero-padded too. Writes "<path>.tmp", fsyncs and renames it over `path`, so a
// failed write never leaves a half-written `path` (nor the .tmp).
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, uint64_t alignment = 32);

}  // namespace tappa
