// Unicode helpers for the tokenizer: code point classes (Unicode 15.1, the version llama.cpp's tables
// use), the lenient UTF-8 decoding llama.cpp applies to input text, and GPT-2's byte <-> unicode map.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tappa::tok {

// Major general category of a code point (low 3 bits of cp_flags()).
enum CpClass : uint8_t {
  kUnassigned = 0,  // Cn, and anything above U+10FFFF
  kNumber = 1,      // \p{N}
  kLetter = 2,      // \p{L}
  kSeparator = 3,   // \p{Z}
  kMark = 4,        // \p{M}
  kPunct = 5,       // \p{P}
  kSymbol = 6,      // \p{S}
  kControl = 7,     // Cc, Cf, Co, Cs
};
inline constexpr uint8_t kClassMask = 0x07;
inline constexpr uint8_t kWhitespace = 0x08;  // Unicode White_Space property (\s)

// Class | kWhitespace for one code point.
uint8_t cp_flags(uint32_t cp);
inline uint8_t cp_class(uint32_t cp) { return cp_flags(cp) & kClassMask; }

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Decodes `s` the way llama.cpp does before pre-tokenizing: a lead byte followed by the right number
// of continuation bytes is decoded without checking for overlong forms or surrogates; any other byte
// (stray continuation byte, truncated sequence, 0xF8..0xFF) becomes U+FFFD and decoding resumes at the
// next byte. A 4-byte form above U+10FFFF (llama.cpp throws on those later) also becomes U+FFFD.
void decode_utf8_lenient(std::string_view s, std::vector<uint32_t>& out);

// Appends the UTF-8 form of `cp` (<= 0x10FFFF; surrogates are encoded like any other code point).
void append_utf8(std::string& out, uint32_t cp);

// Length of the UTF-8 sequence that a lead byte announces (1 for continuation / invalid bytes).
inline size_t utf8_seq_len(unsigned char c) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

// GPT-2 byte-level BPE: each byte is shown as one printable code point.
const std::array<uint32_t, 256>& byte_to_cp();
const std::array<std::string, 256>& byte_to_utf8();  // the same, as UTF-8
// The byte a code point stands for, or -1 when it is not one of the 256.
int cp_to_byte(uint32_t cp);

// Simple ASCII lowering (the only case mapping the pre-tokenizers need: no non-ASCII code point
// lowercases to an ASCII letter used in the contraction rules).
inline uint32_t ascii_lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp; }

}  // namespace tappa::tok
