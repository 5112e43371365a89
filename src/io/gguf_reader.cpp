// GgufFile: maps a GGUF v2/v3 file and validates all of it before anything is handed out.
//
// Layout (all little-endian):
//   "GGUF" | u32 version | u64 tensor count | u64 kv count
//   kv:     string key | u32 value type | value          (string = u64 length + bytes)
//   tensor: string name | u32 n_dims | i64 dims[n_dims] | u32 ggml type | u64 offset
//   zero padding to general.alignment (default 32), then the data section; offsets are relative to it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/byte_cursor.h"
#include "io/gguf_format.h"
#include "io/mapped_file.h"
#include "io/text.h"
#include "tappa/error.h"
#include "tappa/gguf.h"

namespace tappa {

using io::cat;
using io::quoted;

namespace io {

// Everything GgufFile::open learns; GgufFile::Impl is just this (a named base so that the parser,
// which is not a friend of GgufFile, can fill it).
struct GgufContents {
  std::string path;
  io::MappedFile map;
  uint32_t version = 0;
  uint64_t alignment = io::kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::unordered_map<std::string, size_t, io::StringHash, std::equal_to<>> key_index;
  std::vector<GgufTensorInfo> tensors;
  std::unordered_map<std::string, size_t, io::StringHash, std::equal_to<>> tensor_index;
};

}  // namespace io

struct GgufFile::Impl : io::GgufContents {};

namespace {

class Parser {
 public:
  explicit Parser(io::GgufContents& f) : f_(f), c_(f.map.data(), f.map.size(), f.path) {}

  void run() {
    read_header();
    read_metadata();
    read_alignment();
    read_tensor_infos();
    place_data_section();
    check_tensor_data();
  }

 private:
  void read_header() {
    if (c_.size() == 0) c_.fail("empty file (not a GGUF file)");
    const uint8_t* magic = c_.take(4);
    if (std::memcmp(magic, io::kGgufMagic, 4) != 0)
      c_.fail(cat("not a GGUF file (bad magic ", quoted({reinterpret_cast<const char*>(magic), 4}),
                  ", expected 'GGUF')"));

    const auto version = c_.read<uint32_t>();
    const uint32_t swapped = __builtin_bswap32(version);
    if (version == 1)
      c_.fail("GGUF version 1 is not supported (only versions 2 and 3); convert the model again with a current llama.cpp");
    if (version != 2 && version != 3) {
      // A big-endian writer stores 3 as 03 00 00 00 read backwards, i.e. 0x03000000 here.
      if (swapped >= 1 && swapped <= 3)
        c_.fail(cat("big-endian GGUF file (version ", swapped,
                    " stored byte-swapped); only little-endian GGUF files are supported"));
      c_.fail(cat("unsupported GGUF version ", version, " (only versions 2 and 3 are supported)"));
    }
    f_.version = version;

    n_tensors_ = c_.read<uint64_t>();
    n_kv_ = c_.read<uint64_t>();
    // Both counts are checked against what the rest of the file could hold before anything is
    // reserved, so a hostile count cannot trigger a huge allocation.
    if (n_kv_ > c_.remaining() / io::kMinKvBytes)
      c_.fail(cat("metadata key-value count ", n_kv_, " is impossible: each entry takes at least ",
                  io::kMinKvBytes, " bytes and only ", c_.remaining(), " bytes follow the header"));
    if (n_tensors_ > c_.remaining() / io::kMinTensorInfoBytes)
      c_.fail(cat("tensor count ", n_tensors_, " is impossible: each tensor info takes at least ",
                  io::kMinTensorInfoBytes, " bytes and only ", c_.remaining(), " bytes follow the header"));
  }

  void read_metadata() {
    f_.metadata.reserve(n_kv_);
    f_.key_index.reserve(n_kv_);
    for (uint64_t i = 0; i < n_kv_; ++i) {
      c_.where() = {"metadata entry", i, true, {}};
      const std::string_view key = c_.read_string();
      if (key.empty()) c_.fail_here("empty key");
      c_.where().name = key;
      const auto raw_type = c_.read<uint32_t>();
      GgufValue value = read_value(raw_type, 0);
      const auto [it, inserted] = f_.key_index.emplace(std::string(key), f_.metadata.size());
      if (!inserted)
        c_.fail(cat("duplicate metadata key ", quoted(key), " (entries ", it->second, " and ", i, ")"));
      f_.metadata.emplace_back(std::string(key), std::move(value));
    }
  }

  // `level` counts the arrays around this value; arrays may nest at most kMaxArrayNesting deep, which
  // also bounds the recursion.
  GgufValue read_value(uint32_t raw_type, int level) {
    if (!io::is_valid_value_type(raw_type)) c_.fail_here(cat("unknown value type ", raw_type));
    if (++n_values_ > io::kMaxMetadataValues)
      c_.fail(cat("metadata holds more than ", io::kMaxMetadataValues, " values"));
    const auto type = static_cast<GgufType>(raw_type);
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufType::UINT8: v.data = uint64_t{c_.read<uint8_t>()}; break;
      case GgufType::INT8: v.data = int64_t{c_.read<int8_t>()}; break;
      case GgufType::UINT16: v.data = uint64_t{c_.read<uint16_t>()}; break;
      case GgufType::INT16: v.data = int64_t{c_.read<int16_t>()}; break;
      case GgufType::UINT32: v.data = uint64_t{c_.read<uint32_t>()}; break;
      case GgufType::INT32: v.data = int64_t{c_.read<int32_t>()}; break;
      case GgufType::UINT64: v.data = c_.read<uint64_t>(); break;
      case GgufType::INT64: v.data = c_.read<int64_t>(); break;
      case GgufType::FLOAT32: v.data = double{c_.read<float>()}; break;
      case GgufType::FLOAT64: v.data = c_.read<double>(); break;
      case GgufType::BOOL: {
        const auto b = c_.read<uint8_t>();
        if (b > 1) c_.fail_here(cat("invalid bool value ", b, " at offset ", c_.pos() - 1));
        v.data = b == 1;
        break;
      }
      case GgufType::STRING: v.data = std::string(c_.read_string()); break;
      case GgufType::ARRAY: v.data = read_array(level); break;
    }
    return v;
  }

  GgufArray read_array(int level) {
    if (level >= io::kMaxArrayNesting)
      c_.fail_here(cat("arrays nested more than ", io::kMaxArrayNesting, " levels deep"));
    const size_t at = c_.pos();
    const auto raw_elem = c_.read<uint32_t>();
    if (!io::is_valid_value_type(raw_elem)) c_.fail_here(cat("unknown array element type ", raw_elem));
    const auto elem = static_cast<GgufType>(raw_elem);
    const auto count = c_.read<uint64_t>();
    const uint64_t min_size = io::min_value_size(elem);
    if (count > c_.remaining() / min_size)
      c_.fail(cat("truncated file: ", c_.where().describe(), ": array of ", count, " ", gguf_type_name(elem),
                  " elements at offset ", at, " needs at least ", min_size, " bytes each but only ", c_.remaining(),
                  " bytes are left (file has ", c_.size(), ")"));
    GgufArray a;
    a.element_type = elem;
    a.values.reserve(count);
    for (uint64_t i = 0; i < count; ++i) a.values.push_back(read_value(raw_elem, level + 1));
    return a;
  }

  void read_alignment() {
    const auto it = f_.key_index.find(io::kAlignmentKey);
    if (it == f_.key_index.end()) return;
    const GgufValue& v = f_.metadata[it->second].second;
    // llama.cpp insists on uint32 too; accepting more would admit files it rejects.
    if (v.type != GgufType::UINT32)
      c_.fail(cat(io::kAlignmentKey, " must be a uint32, found ", gguf_type_name(v.type)));
    const uint64_t a = std::get<uint64_t>(v.data);
    if (!io::is_power_of_two(a)) c_.fail(cat(io::kAlignmentKey, " is ", a, ", must be a nonzero power of two"));
    f_.alignment = a;
  }

  void read_tensor_infos() {
    // Re-checked now that the metadata is consumed: the remaining bytes bound the count tighter.
    if (n_tensors_ > c_.remaining() / io::kMinTensorInfoBytes)
      c_.fail(cat("tensor count ", n_tensors_, " is impossible: each tensor info takes at least ",
                  io::kMinTensorInfoBytes, " bytes and only ", c_.remaining(), " bytes follow the metadata"));
    f_.tensors.reserve(n_tensors_);
    f_.tensor_index.reserve(n_tensors_);
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      c_.where() = {"tensor info", i, true, {}};
      const std::string_view name = c_.read_string();
      if (name.empty()) c_.fail_here("empty tensor name");
      c_.where().name = name;
      const auto n_dims = c_.read<uint32_t>();
      if (n_dims < 1 || n_dims > io::kMaxDims)
        c_.fail(cat("tensor ", quoted(name), " has ", n_dims, " dimensions, must have 1 to ", io::kMaxDims));
      GgufTensorInfo t;
      t.name = std::string(name);
      t.shape.resize(n_dims);
      for (int64_t& d : t.shape) d = c_.read<int64_t>();
      const auto raw_type = c_.read<uint32_t>();
      t.offset = c_.read<uint64_t>();

      const std::string problem = io::tensor_layout_problem(raw_type, t.shape, &t.n_elements, &t.n_bytes);
      if (!problem.empty()) c_.fail(cat("tensor ", quoted(name), " ", problem));
      t.type = static_cast<TensorType>(raw_type);
      if (t.offset % f_.alignment != 0)
        c_.fail(cat("tensor ", quoted(name), " has offset ", t.offset, ", not a multiple of the alignment ",
                    f_.alignment));
      const auto [it, inserted] = f_.tensor_index.emplace(t.name, f_.tensors.size());
      if (!inserted)
        c_.fail(cat("duplicate tensor name ", quoted(name), " (tensor infos ", it->second, " and ", i, ")"));
      f_.tensors.push_back(std::move(t));
    }
  }

  void place_data_section() {
    c_.where() = {};
    if (!io::align_up(c_.pos(), f_.alignment, &f_.data_offset) ||
        (!f_.tensors.empty() && f_.data_offset > c_.size()))
      c_.fail(cat("truncated file: the data section would start at offset ", c_.pos(), " rounded up to alignment ",
                  f_.alignment, ", file has ", c_.size()));
    // A file without tensors may end right after its metadata, without padding.
    if (f_.tensors.empty()) f_.data_offset = std::min<uint64_t>(f_.data_offset, c_.size());
  }

  void check_tensor_data() {
    const uint64_t available = c_.size() - f_.data_offset;
    for (GgufTensorInfo& t : f_.tensors) {
      if (t.offset > available || t.n_bytes > available - t.offset)
        c_.fail(cat("truncated file: tensor ", quoted(t.name), " needs ", t.n_bytes, " bytes at data offset ", t.offset,
                    " (data section starts at ", f_.data_offset, "), file has ", c_.size()));
      t.data = f_.map.data() + f_.data_offset + t.offset;
    }
    // Tensors sharing bytes would alias each other's weights; no valid writer produces that.
    std::vector<const GgufTensorInfo*> by_offset;
    by_offset.reserve(f_.tensors.size());
    for (const GgufTensorInfo& t : f_.tensors) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const GgufTensorInfo& a = *by_offset[i - 1];
      const GgufTensorInfo& b = *by_offset[i];
      if (a.offset + a.n_bytes > b.offset)  // cannot overflow: both are within the file
        c_.fail(cat("tensors ", quoted(a.name), " (data bytes ", a.offset, "..", a.offset + a.n_bytes, ") and ",
                    quoted(b.name), " (data bytes ", b.offset, "..", b.offset + b.n_bytes, ") overlap"));
    }
  }

  io::GgufContents& f_;
  io::ByteCursor c_;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  uint64_t n_values_ = 0;
};

}  // namespace

GgufFile GgufFile::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->map = io::MappedFile::open(path);
  Parser(*impl).run();
  return GgufFile(std::move(impl));
}

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

const std::string& GgufFile::path() const { return impl_->path; }
uint32_t GgufFile::version() const { return impl_->version; }
uint64_t GgufFile::alignment() const { return impl_->alignment; }
uint64_t GgufFile::data_offset() const { return impl_->data_offset; }
uint64_t GgufFile::file_size() const { return impl_->map.size(); }

const std::vector<std::pair<std::string, GgufValue>>& GgufFile::metadata() const { return impl_->metadata; }

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = impl_->key_index.find(key);
  return it == impl_->key_index.end() ? nullptr : &impl_->metadata[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  if (const GgufValue* v = find(key)) return *v;
  throw Error(cat(impl_->path, ": missing metadata key ", quoted(key)));
}

namespace {

// Runs an accessor and puts the file's path in front of its message.
template <class F>
auto with_path(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(cat(path, ": ", e.what()));
  }
}

}  // namespace

std::optional<uint64_t> GgufFile::get_u64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  return with_path(impl_->path, [&] { return v->as_u64(key); });
}

std::optional<double> GgufFile::get_f64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  return with_path(impl_->path, [&] { return v->as_f64(key); });
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  return with_path(impl_->path, [&] { return v->as_string(key); });
}

const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return impl_->tensors; }

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  if (const GgufTensorInfo* t = find_tensor(name)) return *t;
  throw Error(cat(impl_->path, ": missing tensor ", quoted(name)));
}

}  // namespace tappa
