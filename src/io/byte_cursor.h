// A bounds-checked reader over the bytes of a mapped file. Every read checks the remaining length
// first and throws tappa::Error "<path>: truncated file: <where> needs N bytes at offset P, file has S",
// where <where> says which part of the file was being read (kept up to date by the parser), so the
// message points at the damaged entry.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "io/text.h"
#include "tappa/error.h"

namespace tappa::io {

// Which part of the file is being read, for messages: "tensor info 17 ('blk.1.attn_q.weight')".
struct ReadPosition {
  std::string_view section = "header";
  uint64_t index = 0;
  bool has_index = false;
  std::string_view name;  // key or tensor name once read (points into the mapping)

  std::string describe() const {
    std::string s(section);
    if (has_index) s += cat(" ", index);
    if (!name.empty()) s += cat(" (", quoted(name), ")");
    return s;
  }
};

class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, size_t size, std::string_view path) : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t size() const { return size_; }
  size_t remaining() const { return size_ - pos_; }
  ReadPosition& where() { return where_; }
  const ReadPosition& where() const { return where_; }

  // Throws "<path>: <problem>".
  [[noreturn]] void fail(std::string_view problem) const { throw Error(cat(path_, ": ", problem)); }
  // Throws "<path>: <where>: <problem>".
  [[noreturn]] void fail_here(std::string_view problem) const { fail(cat(where_.describe(), ": ", problem)); }

  const uint8_t* take(uint64_t n) {
    if (n > remaining())
      fail(cat("truncated file: ", where_.describe(), " needs ", n, " bytes at offset ", pos_, ", file has ", size_));
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  template <class T>
    requires std::is_arithmetic_v<T>
  T read() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }

  // A GGUF string: uint64 length, then that many bytes (no terminator). The view points into the map.
  std::string_view read_string() {
    const size_t at = pos_;
    const auto len = read<uint64_t>();
    if (len > remaining())
      fail(cat("truncated file: ", where_.describe(), ": string length ", len, " at offset ", at,
               " exceeds the ", remaining(), " bytes left (file has ", size_, ")"));
    return {reinterpret_cast<const char*>(take(len)), static_cast<size_t>(len)};
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string_view path_;
  ReadPosition where_;
};

}  // namespace tappa::io
