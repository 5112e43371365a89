// Small string helpers for building one-line error messages (GCC 12 has no <format>).
#pragma once
#include <charconv>
#include <concepts>
#include <string>
#include <string_view>

namespace tappa::io {

inline void append_to(std::string& s, std::string_view v) { s += v; }
inline void append_to(std::string& s, char c) { s += c; }

template <std::integral T>
  requires(!std::same_as<T, char> && !std::same_as<T, bool>)
void append_to(std::string& s, T v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

// cat("tensor ", 3, " is ", name) -> "tensor 3 is ...". Integers print in decimal.
template <class... Args>
std::string cat(const Args&... args) {
  std::string s;
  (append_to(s, args), ...);
  return s;
}

// 'text' in single quotes, safe to put in a one-line message: names come from untrusted files, so
// control characters, quotes and non-ASCII bytes are escaped as \xNN and long names are cut short.
inline std::string quoted(std::string_view text, size_t max_bytes = 96) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "'";
  const size_t n = text.size() < max_bytes ? text.size() : max_bytes;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      s += static_cast<char>(c);
    } else {
      s += "\\x";
      s += kHex[c >> 4];
      s += kHex[c & 15];
    }
  }
  if (n < text.size()) s += "...";
  s += '\'';
  return s;
}

}  // namespace tappa::io
