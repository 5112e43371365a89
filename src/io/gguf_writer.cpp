// write_gguf: validates everything first (so a caller mistake never produces a file that GgufFile
// rejects), encodes header, metadata and tensor infos in memory, then streams the tensor data from the
// caller's pointers into "<path>.tmp" and renames it over <path>.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>
#include <vector>

#include "io/gguf_format.h"
#include "io/text.h"
#include "tappa/error.h"
#include "tappa/gguf.h"

namespace tappa {

using io::cat;
using io::quoted;

namespace {

// ---- validation ----

struct IntRange {
  bool is_signed;
  int64_t min;
  uint64_t max;
};

IntRange int_range(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return {false, 0, UINT8_MAX};
    case GgufType::UINT16: return {false, 0, UINT16_MAX};
    case GgufType::UINT32: return {false, 0, UINT32_MAX};
    case GgufType::UINT64: return {false, 0, UINT64_MAX};
    case GgufType::INT8: return {true, INT8_MIN, INT8_MAX};
    case GgufType::INT16: return {true, INT16_MIN, INT16_MAX};
    case GgufType::INT32: return {true, INT32_MIN, INT32_MAX};
    case GgufType::INT64: return {true, INT64_MIN, INT64_MAX};
    default: return {false, 0, 0};
  }
}

bool is_integer_type(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      return true;
    default:
      return false;
  }
}

class MetadataChecker {
 public:
  explicit MetadataChecker(const std::string& path) : path_(path) {}

  void check(std::string_view key, const GgufValue& v, int level) {
    key_ = key;
    check_value(v, level);
  }

 private:
  [[noreturn]] void fail(std::string_view problem) const {
    throw Error(cat(path_, ": cannot write metadata key ", quoted(key_), ": ", problem));
  }

  void check_value(const GgufValue& v, int level) {
    if (!io::is_valid_value_type(static_cast<uint32_t>(v.type)))
      fail(cat("unknown value type ", static_cast<uint32_t>(v.type)));
    if (++n_values_ > io::kMaxMetadataValues) fail(cat("metadata holds more than ", io::kMaxMetadataValues, " values"));
    const std::string_view type_name = gguf_type_name(v.type);
    if (is_integer_type(v.type)) {
      const IntRange r = int_range(v.type);
      if (const auto* u = std::get_if<uint64_t>(&v.data)) {
        if (*u > r.max) fail(cat("value ", *u, " does not fit in ", type_name));
      } else if (const auto* i = std::get_if<int64_t>(&v.data)) {
        if (*i < r.min || (*i > 0 && static_cast<uint64_t>(*i) > r.max))
          fail(cat("value ", *i, " does not fit in ", type_name));
      } else {
        fail(cat("type ", type_name, " needs an integer value"));
      }
      return;
    }
    switch (v.type) {
      case GgufType::FLOAT32: case GgufType::FLOAT64:
        if (!std::holds_alternative<double>(v.data)) fail(cat("type ", type_name, " needs a double value"));
        return;
      case GgufType::BOOL:
        if (!std::holds_alternative<bool>(v.data)) fail("type bool needs a bool value");
        return;
      case GgufType::STRING:
        if (!std::holds_alternative<std::string>(v.data)) fail("type string needs a std::string value");
        return;
      case GgufType::ARRAY: {
        const auto* a = std::get_if<GgufArray>(&v.data);
        if (!a) fail("type array needs a GgufArray value");
        if (level >= io::kMaxArrayNesting) fail(cat("arrays nested more than ", io::kMaxArrayNesting, " levels deep"));
        if (!io::is_valid_value_type(static_cast<uint32_t>(a->element_type)))
          fail(cat("unknown array element type ", static_cast<uint32_t>(a->element_type)));
        for (size_t i = 0; i < a->values.size(); ++i) {
          if (a->values[i].type != a->element_type)
            fail(cat("array element ", i, " has type ", gguf_type_name(a->values[i].type), ", the array holds ",
                     gguf_type_name(a->element_type)));
          check_value(a->values[i], level + 1);
        }
        return;
      }
      default:
        return;
    }
  }

  const std::string& path_;
  std::string_view key_;
  uint64_t n_values_ = 0;
};

// ---- encoding ----

class Encoder {
 public:
  std::vector<uint8_t>& bytes() { return out_; }

  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }

  // Assumes check_value accepted v.
  void put_value(const GgufValue& v) {
    switch (v.type) {
      case GgufType::UINT8: put(static_cast<uint8_t>(bits(v))); break;
      case GgufType::INT8: put(static_cast<int8_t>(bits(v))); break;
      case GgufType::UINT16: put(static_cast<uint16_t>(bits(v))); break;
      case GgufType::INT16: put(static_cast<int16_t>(bits(v))); break;
      case GgufType::UINT32: put(static_cast<uint32_t>(bits(v))); break;
      case GgufType::INT32: put(static_cast<int32_t>(bits(v))); break;
      case GgufType::UINT64: put(bits(v)); break;
      case GgufType::INT64: put(static_cast<int64_t>(bits(v))); break;
      case GgufType::FLOAT32: put(static_cast<float>(std::get<double>(v.data))); break;
      case GgufType::FLOAT64: put(std::get<double>(v.data)); break;
      case GgufType::BOOL: put(static_cast<uint8_t>(std::get<bool>(v.data) ? 1 : 0)); break;
      case GgufType::STRING: put_string(std::get<std::string>(v.data)); break;
      case GgufType::ARRAY: {
        const auto& a = std::get<GgufArray>(v.data);
        put(static_cast<uint32_t>(a.element_type));
        put<uint64_t>(a.values.size());
        for (const GgufValue& e : a.values) put_value(e);
        break;
      }
    }
  }

 private:
  // The integer as two's-complement bits; narrowing casts then keep the low bytes.
  static uint64_t bits(const GgufValue& v) {
    if (const auto* u = std::get_if<uint64_t>(&v.data)) return *u;
    return static_cast<uint64_t>(std::get<int64_t>(v.data));
  }

  std::vector<uint8_t> out_;
};

// ---- output ----

// Owns "<path>.tmp" until commit(): any failure before that closes and deletes it.
class TempFile {
 public:
  TempFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create " + tmp_);
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }

  void write(const void* data, uint64_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("cannot write");
      }
      p += w;
      n -= static_cast<uint64_t>(w);
      written_ += static_cast<uint64_t>(w);
    }
  }

  void pad_to(uint64_t offset) {
    static constexpr uint8_t kZeros[256] = {};
    while (written_ < offset) write(kZeros, std::min<uint64_t>(sizeof kZeros, offset - written_));
  }

  uint64_t written() const { return written_; }

  // fsync before rename so that a crash cannot leave <path> pointing at an incomplete file.
  void commit() {
    if (::fsync(fd_) != 0) fail("cannot write");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("cannot write");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename " + tmp_ + " to it");
    committed_ = true;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(cat(path_, ": ", what, ": ", std::strerror(errno)));
  }

  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

}  // namespace

void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorToWrite>& tensors, uint64_t alignment) {
  if (!io::is_power_of_two(alignment) || alignment > UINT32_MAX)
    throw Error(cat(path, ": cannot write: alignment ", alignment, " is not a power of two that fits in uint32"));

  // Metadata: unique non-empty keys, values that encode as their declared type, and a
  // general.alignment that agrees with the layout actually written.
  MetadataChecker checker(path);
  std::unordered_set<std::string_view> keys;
  bool has_alignment_key = false;
  for (const auto& [key, value] : metadata) {
    if (key.empty()) throw Error(cat(path, ": cannot write: empty metadata key"));
    if (!keys.insert(key).second) throw Error(cat(path, ": cannot write: duplicate metadata key ", quoted(key)));
    checker.check(key, value, 0);
    if (key == io::kAlignmentKey) {
      has_alignment_key = true;
      if (value.type != GgufType::UINT32 || value.as_u64(key) != alignment)
        throw Error(cat(path, ": cannot write: metadata ", io::kAlignmentKey, " = ", value.to_display_string(),
                        " (", gguf_type_name(value.type), ") disagrees with the alignment argument ", alignment,
                        " (it must be a uint32 equal to it)"));
    }
  }

  // Tensors: unique non-empty names, a valid layout, n_bytes equal to what the shape needs.
  std::unordered_set<std::string_view> names;
  for (const GgufTensorToWrite& t : tensors) {
    if (t.name.empty()) throw Error(cat(path, ": cannot write: empty tensor name"));
    if (!names.insert(t.name).second) throw Error(cat(path, ": cannot write: duplicate tensor name ", quoted(t.name)));
    uint64_t n_elements = 0, n_bytes = 0;
    const std::string problem = io::tensor_layout_problem(static_cast<uint32_t>(t.type), t.shape, &n_elements, &n_bytes);
    if (!problem.empty()) throw Error(cat(path, ": cannot write: tensor ", quoted(t.name), " ", problem));
    if (t.n_bytes != n_bytes)
      throw Error(cat(path, ": cannot write: tensor ", quoted(t.name), " has n_bytes ", t.n_bytes, " but its type ",
                      tensor_type_info(t.type).name, " and shape need ", n_bytes));
    if (n_bytes > 0 && t.data == nullptr)
      throw Error(cat(path, ": cannot write: tensor ", quoted(t.name), " has no data"));
  }

  // Header, metadata and tensor infos, with offsets laid out back to back at `alignment`.
  const bool add_alignment_key = !has_alignment_key && alignment != io::kDefaultAlignment;
  Encoder e;
  for (char ch : io::kGgufMagic) e.put(ch);
  e.put<uint32_t>(io::kGgufWriteVersion);
  e.put<uint64_t>(tensors.size());
  e.put<uint64_t>(metadata.size() + (add_alignment_key ? 1 : 0));
  for (const auto& [key, value] : metadata) {
    e.put_string(key);
    e.put(static_cast<uint32_t>(value.type));
    e.put_value(value);
  }
  if (add_alignment_key) {
    e.put_string(io::kAlignmentKey);
    e.put(static_cast<uint32_t>(GgufType::UINT32));
    e.put(static_cast<uint32_t>(alignment));
  }
  std::vector<uint64_t> offsets;
  offsets.reserve(tensors.size());
  uint64_t next = 0;
  for (const GgufTensorToWrite& t : tensors) {
    e.put_string(t.name);
    e.put(static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) e.put(d);
    e.put(static_cast<uint32_t>(t.type));
    e.put(next);
    offsets.push_back(next);
    uint64_t end = 0;
    if (__builtin_add_overflow(next, t.n_bytes, &end) || !io::align_up(end, alignment, &next))
      throw Error(cat(path, ": cannot write: total tensor data size overflows"));
  }

  TempFile out(path);
  out.write(e.bytes().data(), e.bytes().size());
  uint64_t data_offset = 0;
  io::align_up(out.written(), alignment, &data_offset);  // small: the encoded header is in memory
  out.pad_to(data_offset);
  for (size_t i = 0; i < tensors.size(); ++i) {
    out.pad_to(data_offset + offsets[i]);
    out.write(tensors[i].data, tensors[i].n_bytes);
  }
  // The last tensor is padded as well, as llama.cpp does, so the file size is a multiple of the alignment.
  if (!tensors.empty()) out.pad_to(data_offset + next);
  out.commit();
}

}  // namespace tappa
