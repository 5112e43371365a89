// SentencePiece-style tokenizer (tokenizer.ggml.model = "llama") on Gemma 3's vocabulary: exact
// agreement with llama.cpp's llama-tokenize on the same >= 200 KB corpus as the BPE tests (golden files
// tests/data/tokenizer/golden_gemma3*.txt from scripts/gen_tokenizer_golden.sh), plus the rules the
// golden files cannot isolate: byte fallback, space prefix, BOS, decoding, Gemma's chat format.
//
// Needs models/gemma-3-270m-q4_k_m.gguf (scripts/fetch_model.sh --gemma; $TAPPA_GEMMA_MODEL overrides)
// and, for the wiki part of the corpus, ../shared/data; tests skip with a message when absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/tokenizer.h"
#include "test_util.h"
#include "tokenizer_corpus.h"

namespace {

using tappa::ChatMessage;
using tappa::GgufFile;
using tappa::Tokenizer;
using Ids = std::vector<int32_t>;

std::string gemma_path() {
  if (const char* env = std::getenv("TAPPA_GEMMA_MODEL"); env && *env) return env;
  return tappa::test::source_dir() + "/models/gemma-3-270m-q4_k_m.gguf";
}

// The corpus and golden readers are shared with the Qwen2.5 tokenizer test (tokenizer_corpus.h).
using tappa::test::hostile_docs;
using tappa::test::mixed_docs;
using tappa::test::wiki_docs;
using tappa::test::wiki_path;

struct Gemma {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
};

const Tokenizer* gemma() {
  static Gemma g;
  if (!g.tok && tappa::test::exists(gemma_path())) {
    g.file = std::make_unique<GgufFile>(GgufFile::open(gemma_path()));
    g.tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(*g.file));
  }
  return g.tok.get();
}

#define REQUIRE_GEMMA()                                                                                 \
  do {                                                                                                  \
    if (!gemma()) GTEST_SKIP() << "model " << gemma_path() << " not found: run scripts/fetch_model.sh --gemma"; \
  } while (0)

void expect_golden(const std::vector<std::string>& docs, const std::string& golden_name, bool parse_special) {
  tappa::test::expect_tokenizer_golden(*gemma(), docs, golden_name, parse_special);
}

TEST(TokenizerSpmGolden, Gemma3Corpus) {
  REQUIRE_GEMMA();
  if (!tappa::test::exists(wiki_path())) GTEST_SKIP() << "corpus data " << wiki_path() << " not found (set TAPPA_DATA_DIR)";
  std::vector<std::string> docs = wiki_docs();
  for (auto& d : mixed_docs()) docs.push_back(std::move(d));
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  ASSERT_GE(bytes, 200u * 1000u) << "the acceptance corpus must hold at least 200 KB";
  expect_golden(docs, "golden_gemma3.txt", false);
}

TEST(TokenizerSpmGolden, Gemma3ParseSpecial) {
  REQUIRE_GEMMA();
  expect_golden(mixed_docs(), "golden_gemma3_special.txt", true);
}

TEST(TokenizerSpmGolden, Gemma3Hostile) {
  REQUIRE_GEMMA();
  expect_golden(hostile_docs(), "golden_gemma3_hostile.txt", false);
}

TEST(TokenizerSpm, MetadataAndBos) {
  REQUIRE_GEMMA();
  const Tokenizer& tok = *gemma();
  EXPECT_EQ(tok.model_type(), "llama");
  EXPECT_EQ(tok.bos(), 2);  // tokenizer.ggml.bos_token_id of the file
  EXPECT_TRUE(tok.add_bos());
  const Ids with = tok.encode("Hello", true), without = tok.encode("Hello", false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(with[0], tok.bos());
  EXPECT_TRUE(std::equal(without.begin(), without.end(), with.begin() + 1));
  // SentencePiece's convention: encode("", add_special) is [BOS] alone.
  EXPECT_EQ(tok.encode("", true), Ids{tok.bos()});
  EXPECT_TRUE(tok.encode("", false).empty());
}

TEST(TokenizerSpm, SpacesAreVisibleSpacesAndNoPrefix) {
  REQUIRE_GEMMA();
  const Tokenizer& tok = *gemma();
  // Gemma's file sets add_space_prefix = false: "world" at the start has no leading U+2581, while
  // " world" does, so the two differ and decode back to their own text.
  const Ids a = tok.encode("world", false), b = tok.encode(" world", false);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(a, b);
  EXPECT_EQ(tok.token_text(b[0]).rfind("\xe2\x96\x81", 0), 0u) << "a leading space is stored as U+2581";
  EXPECT_EQ(tok.decode(a), "world");
  EXPECT_EQ(tok.decode(b), " world");
}

TEST(TokenizerSpm, ByteFallbackRoundTrips) {
  REQUIRE_GEMMA();
  const Tokenizer& tok = *gemma();
  // Invalid UTF-8 and control bytes cannot be vocabulary pieces: they come out as <0xNN> tokens, which
  // decode back to exactly those bytes.
  const std::string text = std::string("a\xff") + '\x01' + "b\xc3";
  const Ids ids = tok.encode(text, false);
  EXPECT_EQ(tok.decode(ids), text);
  bool saw_byte = false;
  for (int32_t id : ids) saw_byte |= tok.token_text(id) == "<0xFF>";
  EXPECT_TRUE(saw_byte) << "0xFF should be encoded by its byte token <0xFF>";
}

TEST(TokenizerSpm, RoundTripCorpus) {
  REQUIRE_GEMMA();
  const Tokenizer& tok = *gemma();
  size_t checked = 0;
  for (const std::string& d : mixed_docs()) {
    EXPECT_EQ(tok.decode(tok.encode(d, false)), d);
    ++checked;
  }
  EXPECT_GT(checked, 10u);
}

TEST(TokenizerSpm, SpecialTokens) {
  REQUIRE_GEMMA();
  const Tokenizer& tok = *gemma();
  const Ids parsed = tok.encode("<start_of_turn>user", false, true);
  ASSERT_FALSE(parsed.empty());
  EXPECT_EQ(tok.token_text(parsed[0]), "<start_of_turn>");
  const Ids plain = tok.encode("<start_of_turn>user", false, false);
  EXPECT_NE(plain[0], parsed[0]) << "without parse_special a control token's text is plain text";
  // <end_of_turn> ends generation (llama.cpp's end-of-generation list); control text is not rendered.
  const Ids eot = tok.encode("<end_of_turn>", false, true);
  ASSERT_EQ(eot.size(), 1u);
  EXPECT_TRUE(tok.is_eog(eot[0]));
  EXPECT_TRUE(tok.is_eog(tok.eos()));
  EXPECT_EQ(tok.token_to_piece(eot[0]), "");
  EXPECT_EQ(tok.token_to_piece(eot[0], true), "<end_of_turn>");
}

TEST(TokenizerSpm, GemmaChatFormat) {
  REQUIRE_GEMMA();
  const Tokenizer& tok = *gemma();
  // llama.cpp's Gemma rendering: the system text joins the first user turn, "assistant" is "model".
  const std::vector<ChatMessage> msgs = {{"system", " Be brief. "}, {"user", "Hi\n"}, {"assistant", "Hello."}, {"user", "Bye"}};
  EXPECT_EQ(tok.apply_chat_template(msgs, true),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
}

}  // namespace
