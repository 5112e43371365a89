#include "tokenizer/unicode.h"

#include <algorithm>
#include <memory>

namespace tappa::tok {
namespace {

constexpr uint32_t kMaxCodePoint = 0x110000;

constexpr uint32_t kRanges[] = {
#include "tokenizer/unicode_table.inc"
};

// Unicode's White_Space property (PropList.txt); the same set in every version since 4.0.1.
constexpr uint32_t kWhiteSpace[] = {0x0009, 0x000A, 0x000B, 0x000C, 0x000D, 0x0020, 0x0085, 0x00A0,
                                    0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
                                    0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F,
                                    0x3000};

const uint8_t* flags_table() {
  static const std::unique_ptr<uint8_t[]> table = [] {
    auto t = std::make_unique<uint8_t[]>(kMaxCodePoint);
    constexpr size_t n = sizeof(kRanges) / sizeof(kRanges[0]);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t first = kRanges[i] >> 3;
      const uint32_t last = i + 1 < n ? (kRanges[i + 1] >> 3) : kMaxCodePoint;
      std::fill(t.get() + first, t.get() + last, static_cast<uint8_t>(kRanges[i] & kClassMask));
    }
    for (uint32_t cp : kWhiteSpace) t[cp] |= kWhitespace;
    return t;
  }();
  return table.get();
}

struct ByteMaps {
  std::array<uint32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 512> from_cp{};  // every mapped code point is < 0x144
};

const ByteMaps& byte_maps() {
  static const ByteMaps maps = [] {
    ByteMaps m;
    m.from_cp.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the other 68 bytes take U+0100, U+0101, ... in
    // byte order.
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : next++;
      m.to_cp[b] = cp;
      m.from_cp[cp] = static_cast<int16_t>(b);
      append_utf8(m.to_utf8[b], cp);
    }
    return m;
  }();
  return maps;
}

}  // namespace

uint8_t cp_flags(uint32_t cp) {
  static const uint8_t* table = flags_table();
  return cp < kMaxCodePoint ? table[cp] : static_cast<uint8_t>(kUnassigned);
}

void decode_utf8_lenient(std::string_view s, std::vector<uint32_t>& out) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  out.reserve(out.size() + n);
  auto cont = [&](size_t i) { return i < n && (p[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      out.push_back(c);
      i += 1;
    } else if (c < 0xC0) {
      out.push_back(kReplacementChar);
      i += 1;
    } else if (c < 0xE0) {
      if (cont(i + 1)) {
        out.push_back((uint32_t(c & 0x1F) << 6) | (p[i + 1] & 0x3F));
        i += 2;
      } else {
        out.push_back(kReplacementChar);
        i += 1;
      }
    } else if (c < 0xF0) {
      if (cont(i + 1) && cont(i + 2)) {
        out.push_back((uint32_t(c & 0x0F) << 12) | (uint32_t(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F));
        i += 3;
      } else {
        out.push_back(kReplacementChar);
        i += 1;
      }
    } else if (c < 0xF8) {
      if (cont(i + 1) && cont(i + 2) && cont(i + 3)) {
        const uint32_t cp = (uint32_t(c & 0x07) << 18) | (uint32_t(p[i + 1] & 0x3F) << 12) |
                            (uint32_t(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
        out.push_back(cp < kMaxCodePoint ? cp : kReplacementChar);
        i += 4;
      } else {
        out.push_back(kReplacementChar);
        i += 1;
      }
    } else {
      out.push_back(kReplacementChar);
      i += 1;
    }
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | ((cp >> 18) & 0x07)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const std::array<uint32_t, 256>& byte_to_cp() { return byte_maps().to_cp; }
const std::array<std::string, 256>& byte_to_utf8() { return byte_maps().to_utf8; }

int cp_to_byte(uint32_t cp) {
  const auto& m = byte_maps();
  return cp < m.from_cp.size() ? m.from_cp[cp] : -1;
}

}  // namespace tappa::tok
