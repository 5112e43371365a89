// Fuzz target: the default model's tokenizer (SmolLM2's byte-level BPE, 49152 tokens) on arbitrary bytes.
//
// Input: byte 0 picks the flags, the rest is the text. Checked for every input:
//   - encode never crashes or throws, whatever the bytes (invalid UTF-8, NULs, special-token texts);
//   - every id it returns is inside the vocabulary;
//   - byte-level BPE is lossless up to two things llama.cpp does too: the input is decoded leniently
//     (invalid bytes become U+FFFD, overlong forms their code point), and a byte whose byte token is
//     missing from the vocabulary is dropped (SmolLM2 lacks 21 of the 256, e.g. 0x13, 0x14, 0xFF;
//     found by this fuzzer and checked against llama-tokenize). So decode(encode(text)) must equal the
//     text decoded that way, encoded again, minus those bytes — for plain-text encoding and, with
//     control tokens rendered back, with special-token parsing (SmolLM2's special tokens are ASCII,
//     so splitting at them first commutes with the decoding);
//   - decode of arbitrary ids either works or throws tappa::Error for an id outside the vocabulary.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "fuzz_util.h"
#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

std::unique_ptr<tappa::GgufFile> g_file;
std::unique_ptr<tappa::Tokenizer> g_tok;
std::array<bool, 256> g_has_byte_token{};  // does the vocabulary hold the byte-level token of this byte?

// What decode(encode(text)) must give: the text decoded leniently to code points, encoded back to
// UTF-8, without the bytes that have no byte token.
std::string expected_round_trip(std::string_view text) {
  std::vector<uint32_t> cps;
  tappa::tok::decode_utf8_lenient(text, cps);
  std::string utf8, out;
  for (uint32_t cp : cps) tappa::tok::append_utf8(utf8, cp);
  for (char c : utf8)
    if (g_has_byte_token[static_cast<uint8_t>(c)]) out += c;
  return out;
}

[[noreturn]] void fail(const char* what, std::string_view text) {
  std::fprintf(stderr, "%s (text of %zu bytes)\n", what, text.size());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string path = tappa::fuzz::default_model();
  try {
    g_file = std::make_unique<tappa::GgufFile>(tappa::GgufFile::open(path));
    g_tok = std::make_unique<tappa::Tokenizer>(tappa::Tokenizer::from_gguf(*g_file));
    const auto& byte_text = tappa::tok::byte_to_utf8();
    std::unordered_set<std::string> vocab;
    for (int32_t id = 0; id < g_tok->n_vocab(); ++id) vocab.insert(g_tok->token_text(id));
    for (int b = 0; b < 256; ++b) g_has_byte_token[b] = vocab.count(byte_text[b]) > 0;
  } catch (const tappa::Error& e) {
    std::fprintf(stderr, "tokenizer_fuzz needs the default model (scripts/fetch_model.sh or $TAPPA_MODEL): %s\n",
                 e.what());
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const tappa::Tokenizer& tok = *g_tok;
  const int32_t n_vocab = tok.n_vocab();

  const bool add_special = flags & 1, parse_special = flags & 2;
  const std::vector<int32_t> ids = tok.encode(text, add_special, parse_special);
  for (int32_t id : ids)
    if (id < 0 || id >= n_vocab) fail("encode returned an id outside the vocabulary", text);

  const std::string want = expected_round_trip(text);
  const std::vector<int32_t> plain = tok.encode(text, false, false);
  if (tok.decode(plain) != want) fail("decode(encode(text)) differs from text", text);
  const std::vector<int32_t> special = tok.encode(text, false, true);
  if (tok.decode(special, true) != want) fail("decode(encode(text, parse_special), render_special) differs", text);

  // The same bytes read as little-endian int32 ids: decode must reject out-of-range ids with an Error.
  std::vector<int32_t> raw((size - 1) / 4);
  for (size_t i = 0; i < raw.size(); ++i)
    raw[i] = static_cast<int32_t>(uint32_t{data[1 + 4 * i]} | uint32_t{data[2 + 4 * i]} << 8 |
                                  uint32_t{data[3 + 4 * i]} << 16 | uint32_t{data[4 + 4 * i]} << 24);
  if (flags & 4)  // half the time, fold them into the vocabulary so decode does real work
    for (int32_t& id : raw) id = static_cast<int32_t>(static_cast<uint32_t>(id) % static_cast<uint32_t>(n_vocab));
  try {
    const std::string s = tok.decode(raw, flags & 8);
    volatile size_t sink = s.size();
    (void)sink;
  } catch (const tappa::Error&) {
    bool out_of_range = false;
    for (int32_t id : raw) out_of_range |= id < 0 || id >= n_vocab;
    if (!out_of_range) fail("decode threw for ids inside the vocabulary", text);
  }
  return 0;
}
