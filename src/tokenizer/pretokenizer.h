// Pre-tokenization: splitting a text fragment into the words that BPE then encodes separately.
//
// Each supported tokenizer.ggml.pre type is a list of split patterns applied in turn (every pattern
// splits each piece the previous ones produced; text between matches stays a piece of its own). The
// patterns are matched with hand-written scanners that reproduce llama.cpp's results exactly,
// including the places where llama.cpp's own matchers differ from a textbook regex engine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace tappa::tok {

enum class PreType {
  Default,  // "default": [\p{P}$+<=>^~|]+, GPT-2, \p{N}+, [0-9][0-9][0-9]
  Gpt2,     // "gpt-2": 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Smollm,   // "smollm": \p{N} (each digit alone), then GPT-2
  Llama3,   // "llama-bpe": (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Qwen2,    // "qwen2": like Llama3 with \p{N} instead of \p{N}{1,3}
};

// Splits `cps` (the code points of one fragment) and returns the piece lengths, in code points, in
// order; they add up to cps.size() and none is zero.
std::vector<size_t> pre_split(PreType type, const std::vector<uint32_t>& cps);

// Units of work done by this thread's tokenizer calls so far: one per code point a pre-tokenizer
// scanner looks at, per BPE / SentencePiece symbol and queue operation, per byte searched for a special
// token or hashed for the word cache. Deterministic for a given input and cache state, so tests can check
// that the work grows linearly with the input (tests/tokenizer_test.cpp) without timing anything.
inline thread_local uint64_t work_units = 0;

}  // namespace tappa::tok
