#include "tokenizer/pretokenizer.h"

#include "tokenizer/unicode.h"

namespace tappa::tok {
namespace {

constexpr uint32_t kNone = 0xFFFFFFFFu;  // "no code point here" (outside the piece)
constexpr uint8_t kPresent = 0x10;        // set in the flags of every code point inside the piece

// A view of one piece [b, e) of the code points. Outside it, cp() is kNone and flags() is 0, so a
// scanner that runs off the end of the piece stops as if it had hit a character of no class.
struct Piece {
  const uint32_t* cps;
  size_t b, e;
  uint32_t cp(size_t i) const {
    ++work_units;
    return (i >= b && i < e) ? cps[i] : kNone;
  }
  uint8_t flags(size_t i) const {
    ++work_units;
    return (i >= b && i < e) ? static_cast<uint8_t>(cp_flags(cps[i]) | kPresent) : 0;
  }
};

inline bool is_letter(uint8_t f) { return (f & kClassMask) == kLetter && (f & kPresent); }
inline bool is_number(uint8_t f) { return (f & kClassMask) == kNumber && (f & kPresent); }
inline bool is_space(uint8_t f) { return (f & kWhitespace) != 0; }
// [^\s\p{L}\p{N}] for a code point inside the piece.
inline bool is_other(uint8_t f) { return (f & kPresent) && !is_space(f) && !is_letter(f) && !is_number(f); }
inline bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

// Collects piece boundaries; every scanner emits the end of each word it recognises.
struct Emitter {
  std::vector<size_t>& out;
  size_t prev;
  void emit(size_t end) {
    if (end > prev) out.push_back(end - prev);
    prev = end;
  }
};

// Length of a 's 't 're 've 'm 'll 'd contraction starting at `pos` (0 if none). `fold` lowers ASCII
// letters first (the case-insensitive form of the Llama 3 and Qwen2 patterns).
size_t contraction_len(const Piece& p, size_t pos, bool fold) {
  if (p.cp(pos) != '\'' || pos + 1 >= p.e) return 0;
  auto low = [&](uint32_t c) { return fold ? ascii_lower(c) : c; };
  const uint32_t c1 = low(p.cp(pos + 1));
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= p.e) return 0;
  const uint32_t c2 = low(p.cp(pos + 2));
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void scan_gpt2(const Piece& p, std::vector<size_t>& out) {
  Emitter em{out, p.b};
  size_t pos = p.b;
  while (pos < p.e) {
    if (size_t n = contraction_len(p, pos, false)) {
      pos += n;
      em.emit(pos);
      continue;
    }
    const uint32_t c = p.cp(pos);
    const bool lead_space = c == ' ';
    const uint8_t f2 = lead_space ? p.flags(pos + 1) : p.flags(pos);
    if (is_letter(f2)) {
      pos += lead_space;
      while (is_letter(p.flags(pos))) ++pos;
      em.emit(pos);
      continue;
    }
    if (is_number(f2)) {
      pos += lead_space;
      while (is_number(p.flags(pos))) ++pos;
      em.emit(pos);
      continue;
    }
    if (is_other(f2)) {
      pos += lead_space;
      while (is_other(p.flags(pos))) ++pos;
      em.emit(pos);
      continue;
    }
    size_t n_space = 0;
    while (is_space(p.flags(pos + n_space))) ++n_space;
    if (n_space > 1 && p.cp(pos + n_space) != kNone) {  // \s+(?!\S): leave the last one for the next word
      pos += n_space - 1;
      em.emit(pos);
      continue;
    }
    pos += n_space > 0 ? n_space : 1;
    em.emit(pos);
  }
}

// Llama 3 (max_digits = 3) and Qwen2 (max_digits = 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
void scan_llama3(const Piece& p, size_t max_digits, std::vector<size_t>& out) {
  Emitter em{out, p.b};
  size_t pos = p.b;
  while (pos < p.e) {
    if (size_t n = contraction_len(p, pos, true)) {
      pos += n;
      em.emit(pos);
      continue;
    }
    const uint32_t c = p.cp(pos);
    const uint8_t f = p.flags(pos);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!is_crlf(c) && !is_number(f) && (is_letter(f) || is_letter(p.flags(pos + 1)))) {
      ++pos;
      while (is_letter(p.flags(pos))) ++pos;
      em.emit(pos);
      continue;
    }
    // \p{N}{1,max}
    if (is_number(f)) {
      size_t start = pos;
      while (is_number(p.flags(pos))) {
        ++pos;
        if (pos - start >= max_digits) {
          em.emit(pos);
          start = pos;
        }
      }
      em.emit(pos);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'. A space at the end of the piece also lands here, alone.
    const bool lead_space = c == ' ';
    const uint8_t f2 = lead_space ? p.flags(pos + 1) : f;
    if (!is_space(f2) && !is_letter(f2) && !is_number(f2)) {
      pos += lead_space;
      while (is_other(p.flags(pos))) ++pos;
      while (is_crlf(p.cp(pos))) ++pos;
      em.emit(pos);
      continue;
    }
    // \s*[\r\n]+ | \s+(?!\S) | \s+
    size_t n_space = 0;
    size_t after_last_crlf = 0;
    while (is_space(p.flags(pos + n_space))) {
      if (is_crlf(p.cp(pos + n_space))) after_last_crlf = pos + n_space + 1;
      ++n_space;
    }
    if (after_last_crlf > 0) {
      pos = after_last_crlf;
      em.emit(pos);
      continue;
    }
    if (n_space > 1 && p.cp(pos + n_space) != kNone) {
      pos += n_space - 1;
      em.emit(pos);
      continue;
    }
    pos += n_space > 0 ? n_space : 1;
    em.emit(pos);
  }
}

// A regex split with one simple pattern: `find(piece, from, &match_end)` returns the start of the
// leftmost match at or after `from` (or piece.e when there is none). Matches and the text between
// them all become pieces.
template <typename Find>
void split_matches(const Piece& p, Find find, std::vector<size_t>& out) {
  Emitter em{out, p.b};
  size_t pos = p.b;
  while (pos < p.e) {
    ++work_units;
    size_t match_end = 0;
    const size_t start = find(p, pos, &match_end);
    if (start >= p.e) break;
    em.emit(start);
    em.emit(match_end);
    pos = match_end;
  }
  em.emit(p.e);
}

// Applies one pass to every piece of `offsets`.
template <typename Pass>
std::vector<size_t> apply(const std::vector<uint32_t>& cps, const std::vector<size_t>& offsets, Pass pass) {
  std::vector<size_t> out;
  out.reserve(offsets.size() + cps.size() / 4);
  size_t start = 0;
  for (size_t len : offsets) {
    pass(Piece{cps.data(), start, start + len}, out);
    start += len;
  }
  return out;
}

bool is_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }

// \p{N}: every number code point alone.
size_t find_one_number(const Piece& p, size_t from, size_t* end) {
  for (size_t i = from; i < p.e; ++i) {
    if (is_number(p.flags(i))) {
      *end = i + 1;
      return i;
    }
  }
  return p.e;
}

// \p{N}+
size_t find_number_run(const Piece& p, size_t from, size_t* end) {
  for (size_t i = from; i < p.e; ++i) {
    if (is_number(p.flags(i))) {
      size_t j = i + 1;
      while (j < p.e && is_number(p.flags(j))) ++j;
      *end = j;
      return i;
    }
  }
  return p.e;
}

// [0-9][0-9][0-9]
size_t find_digit_triple(const Piece& p, size_t from, size_t* end) {
  for (size_t i = from; i + 3 <= p.e; ++i) {
    ++work_units;
    if (is_ascii_digit(p.cps[i]) && is_ascii_digit(p.cps[i + 1]) && is_ascii_digit(p.cps[i + 2])) {
      *end = i + 3;
      return i;
    }
  }
  return p.e;
}

// [\p{P}\$\+<=>\^~\|]+ of the "default" pre-tokenizer. llama.cpp matches it on a copy of the text
// in which each ASCII character stands for itself and each other code point for its class, so \p{P}
// covers the ASCII punctuation !"#%&'()*,-./:;?@[\]_{} and every non-ASCII, non-space code point of
// class P.
bool is_default_punct(uint32_t c) {
  if (c < 0x80) {
    switch (c) {
      case '!': case '"': case '#': case '%': case '&': case '\'': case '(': case ')': case '*':
      case ',': case '-': case '.': case '/': case ':': case ';': case '?': case '@': case '[':
      case '\\': case ']': case '_': case '{': case '}':
      case '$': case '+': case '<': case '=': case '>': case '^': case '~': case '|':
        return true;
      default:
        return false;
    }
  }
  const uint8_t f = cp_flags(c);
  return !is_space(f) && (f & kClassMask) == kPunct;
}

size_t find_default_punct_run(const Piece& p, size_t from, size_t* end) {
  for (size_t i = from; i < p.e; ++i) {
    ++work_units;
    if (is_default_punct(p.cps[i])) {
      size_t j = i + 1;
      while (j < p.e && is_default_punct(p.cps[j])) ++j, ++work_units;
      *end = j;
      return i;
    }
  }
  return p.e;
}

}  // namespace

std::vector<size_t> pre_split(PreType type, const std::vector<uint32_t>& cps) {
  std::vector<size_t> offsets;
  if (cps.empty()) return offsets;
  offsets.push_back(cps.size());
  auto gpt2 = [](const Piece& p, std::vector<size_t>& out) { scan_gpt2(p, out); };
  auto with = [](auto find) {
    return [find](const Piece& p, std::vector<size_t>& out) { split_matches(p, find, out); };
  };
  switch (type) {
    case PreType::Gpt2:
      offsets = apply(cps, offsets, gpt2);
      break;
    case PreType::Smollm:
      offsets = apply(cps, offsets, with(find_one_number));
      offsets = apply(cps, offsets, gpt2);
      break;
    case PreType::Llama3:
      offsets = apply(cps, offsets, [](const Piece& p, std::vector<size_t>& out) { scan_llama3(p, 3, out); });
      break;
    case PreType::Qwen2:
      offsets = apply(cps, offsets, [](const Piece& p, std::vector<size_t>& out) { scan_llama3(p, 1, out); });
      break;
    case PreType::Default:
      offsets = apply(cps, offsets, with(find_default_punct_run));
      offsets = apply(cps, offsets, gpt2);
      offsets = apply(cps, offsets, with(find_number_run));
      offsets = apply(cps, offsets, with(find_digit_triple));
      break;
  }
  return offsets;
}

}  // namespace tappa::tok
