// Tokenizer tests: exact agreement with llama.cpp's token ids (golden files made by
// scripts/gen_tokenizer_golden.sh from the corpus of scripts/make_tokenizer_corpus.py), round trips,
// special tokens, BOS/EOS rules, chat templates, hostile input and metadata errors.
//
// Needs the default model (scripts/fetch_model.sh; $TAPPA_MODEL overrides) and, for the wiki part of the
// corpus, ../shared/data ($TAPPA_DATA_DIR overrides); tests skip with a message when they are absent.
// Vocabulary variants (other pre-tokenizers, changed flags, missing keys) are written at test time
// into a temporary directory with tappa::write_gguf from the model's tokenizer.* metadata.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/tokenizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace {

namespace fs = std::filesystem;
using tappa::ChatMessage;
using tappa::GgufFile;
using tappa::GgufValue;
using tappa::Tokenizer;

using Doc = std::string;
using Ids = std::vector<int32_t>;

std::string model_path() {
  if (const char* env = std::getenv("TAPPA_MODEL"); env && *env) return env;
  return std::string(TAPPA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}
std::string shared_data_dir() {
  if (const char* env = std::getenv("TAPPA_DATA_DIR"); env && *env) return env;
  return std::string(TAPPA_SOURCE_DIR) + "/../shared/data";
}
std::string tok_data(const std::string& name) { return std::string(TAPPA_SOURCE_DIR) + "/tests/data/tokenizer/" + name; }
std::string wiki_path() { return shared_data_dir() + "/wikitext2/wiki.test.reconstructed.raw"; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- The corpus (same rules as scripts/make_tokenizer_corpus.py) -----------------------------------

std::vector<Doc> wiki_docs() {
  std::string raw = read_file(wiki_path());
  raw.resize(std::min<size_t>(raw.size(), 163840));
  raw.resize(raw.rfind('\n') + 1);
  std::vector<Doc> docs;
  std::string cur;
  size_t pos = 0;
  while (pos < raw.size()) {
    const size_t nl = raw.find('\n', pos);
    cur.append(raw, pos, nl + 1 - pos);
    pos = nl + 1;
    if (cur.size() >= 2048) {
      docs.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) docs.push_back(cur);
  return docs;
}

std::vector<Doc> mixed_docs() {
  const std::string text = read_file(tok_data("mixed.txt"));
  const std::string sep = "\n=====DOC=====\n";
  std::vector<Doc> docs;
  size_t pos = 0;
  for (size_t at; (at = text.find(sep, pos)) != std::string::npos; pos = at + sep.size()) docs.push_back(text.substr(pos, at - pos));
  docs.push_back(text.substr(pos));
  return docs;
}

std::vector<Doc> hostile_docs() {
  std::istringstream in(read_file(tok_data("hostile.hex")));
  std::vector<Doc> docs;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    Doc d;
    for (size_t i = 0; i + 1 < line.size(); i += 2) d.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
    docs.push_back(d);
  }
  return docs;
}

// Golden file: a '#' header line, then one line of space-separated ids per document.
std::vector<Ids> read_golden(const std::string& name) {
  std::istringstream in(read_file(tok_data(name)));
  std::vector<Ids> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '#') continue;
    Ids ids;
    std::istringstream ls(line);
    for (int32_t id; ls >> id;) ids.push_back(id);
    out.push_back(std::move(ids));
  }
  return out;
}

// ---- Model and variants -----------------------------------------------------------------------------

using Metadata = std::vector<std::pair<std::string, GgufValue>>;

struct Shared {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  Metadata tokenizer_meta;  // general.architecture + tokenizer.*
  fs::path tmp;
  std::map<std::string, std::unique_ptr<Tokenizer>> variants;
  ~Shared() {
    std::error_code ec;
    if (!tmp.empty()) fs::remove_all(tmp, ec);
  }
};

Shared& shared() {
  static Shared s;
  return s;
}

// Loads the model's tokenizer once; false when the model is absent.
bool have_model() {
  Shared& s = shared();
  if (s.tok) return true;
  if (!fs::exists(model_path())) return false;
  s.file = std::make_unique<GgufFile>(GgufFile::open(model_path()));
  s.tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(*s.file));
  for (const auto& [key, value] : s.file->metadata())
    if (key.rfind("tokenizer.", 0) == 0 || key == "general.architecture") s.tokenizer_meta.emplace_back(key, value);
  s.tmp = fs::temp_directory_path() / ("tappa_tokenizer_test_" + std::to_string(::getpid()));
  fs::create_directories(s.tmp);
  return true;
}

#define REQUIRE_MODEL()                                                                      \
  do {                                                                                       \
    if (!have_model()) GTEST_SKIP() << "model " << model_path() << " not found: run scripts/fetch_model.sh"; \
  } while (0)

#define REQUIRE_WIKI()                                                                          \
  do {                                                                                          \
    if (!fs::exists(wiki_path())) GTEST_SKIP() << "corpus data " << wiki_path() << " not found (set TAPPA_DATA_DIR)"; \
  } while (0)

// The model's tokenizer metadata with `edit` applied, written to a GGUF file in the temp dir.
std::string write_variant(const std::string& name, const std::function<void(Metadata&)>& edit) {
  Metadata meta = shared().tokenizer_meta;
  edit(meta);
  const std::string path = (shared().tmp / (name + ".gguf")).string();
  tappa::write_gguf(path, meta, {});
  return path;
}

void set_key(Metadata& meta, const std::string& key, GgufValue value) {
  for (auto& kv : meta) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  meta.emplace_back(key, std::move(value));
}
void drop_key(Metadata& meta, const std::string& key) {
  std::erase_if(meta, [&](const auto& kv) { return kv.first == key; });
}

Tokenizer load_variant(const std::string& name, const std::function<void(Metadata&)>& edit) {
  const GgufFile f = GgufFile::open(write_variant(name, edit));
  return Tokenizer::from_gguf(f);
}

// The vocabulary with another pre-tokenizer and no add_bos_token key, as scripts/gen_tokenizer_golden.sh
// makes for the oracle. Cached per pre type.
const Tokenizer& pre_variant(const std::string& pre) {
  auto& slot = shared().variants[pre];
  if (!slot) {
    slot = std::make_unique<Tokenizer>(load_variant("pre_" + pre, [&](Metadata& m) {
      set_key(m, "tokenizer.ggml.pre", GgufValue::str(pre));
      drop_key(m, "tokenizer.ggml.add_bos_token");
    }));
  }
  return *slot;
}

// ---- Comparison -------------------------------------------------------------------------------------

// Escapes control characters (and, with escape_utf8, every non-ASCII byte: token pieces may be partial
// UTF-8 sequences) for failure messages.
std::string printable(std::string_view s, size_t max = 160, bool escape_utf8 = false) {
  std::string out;
  for (unsigned char c : s.substr(0, max)) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F || (escape_utf8 && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string describe_ids(const Tokenizer& tok, const Ids& ids, size_t from, size_t to) {
  std::string out;
  for (size_t i = from; i < std::min(to, ids.size()); ++i) {
    out += std::to_string(ids[i]);
    if (ids[i] >= 0 && ids[i] < tok.n_vocab()) out += "'" + printable(tok.token_to_piece(ids[i], true), 24, true) + "'";
    out += " ";
  }
  return out;
}

// Encodes every document and compares with the golden ids; reports the first mismatch in detail and
// counts the documents that differ.
void expect_golden(const Tokenizer& tok, const std::vector<Doc>& docs, const std::string& golden_name, bool parse_special) {
  const std::vector<Ids> golden = read_golden(golden_name);
  ASSERT_EQ(golden.size(), docs.size()) << golden_name << " does not match the corpus: regenerate it with scripts/gen_tokenizer_golden.sh";
  size_t bad = 0, tokens = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    const Ids got = tok.encode(docs[d], /*add_special=*/true, parse_special);
    tokens += golden[d].size();
    if (got == golden[d]) continue;
    if (bad++ > 0) continue;
    size_t k = 0;
    while (k < got.size() && k < golden[d].size() && got[k] == golden[d][k]) ++k;
    const size_t from = k >= 4 ? k - 4 : 0;
    // Where in the text: the bytes the matching prefix covers.
    const std::string prefix = tok.decode(Ids(golden[d].begin(), golden[d].begin() + static_cast<std::ptrdiff_t>(k)), true);
    ADD_FAILURE() << golden_name << ": document " << d << " differs at token " << k << " (got " << got.size()
                  << " tokens, expected " << golden[d].size() << ")\n"
                  << "  expected: ..." << describe_ids(tok, golden[d], from, k + 6) << "\n"
                  << "  got:      ..." << describe_ids(tok, got, from, k + 6) << "\n"
                  << "  text near byte " << prefix.size() << ": \""
                  << printable(std::string_view(docs[d]).substr(prefix.size() >= 20 ? prefix.size() - 20 : 0), 80) << "\"";
  }
  EXPECT_EQ(bad, 0u) << golden_name << ": " << bad << " of " << docs.size() << " documents differ";
  std::printf("[ golden   ] %s: %zu documents, %zu tokens, %zu differ\n", golden_name.c_str(), docs.size(), tokens, bad);
}

std::vector<Doc> all_docs() {
  std::vector<Doc> docs = wiki_docs();
  for (Doc& d : mixed_docs()) docs.push_back(std::move(d));
  return docs;
}

// ---- Golden -----------------------------------------------------------------------------------------

TEST(TokenizerGolden, SmolLM2) {
  REQUIRE_MODEL();
  REQUIRE_WIKI();
  expect_golden(*shared().tok, all_docs(), "golden_smollm2.txt", false);
}

TEST(TokenizerGolden, SmolLM2ParseSpecial) {
  REQUIRE_MODEL();
  expect_golden(*shared().tok, mixed_docs(), "golden_smollm2_special.txt", true);
}

TEST(TokenizerGolden, SmolLM2Hostile) {
  REQUIRE_MODEL();
  expect_golden(*shared().tok, hostile_docs(), "golden_smollm2_hostile.txt", false);
}

TEST(TokenizerGolden, LlamaBpe) {
  REQUIRE_MODEL();
  REQUIRE_WIKI();
  expect_golden(pre_variant("llama-bpe"), all_docs(), "golden_llama-bpe.txt", false);
}

TEST(TokenizerGolden, LlamaBpeHostile) {
  REQUIRE_MODEL();
  expect_golden(pre_variant("llama-bpe"), hostile_docs(), "golden_llama-bpe_hostile.txt", false);
}

TEST(TokenizerGolden, Qwen2) {
  REQUIRE_MODEL();
  REQUIRE_WIKI();
  expect_golden(pre_variant("qwen2"), all_docs(), "golden_qwen2.txt", false);
}

TEST(TokenizerGolden, Qwen2Hostile) {
  REQUIRE_MODEL();
  expect_golden(pre_variant("qwen2"), hostile_docs(), "golden_qwen2_hostile.txt", false);
}

TEST(TokenizerGolden, Default) {
  REQUIRE_MODEL();
  expect_golden(pre_variant("default"), mixed_docs(), "golden_default.txt", false);
}

// ---- Round trip -------------------------------------------------------------------------------------

TEST(TokenizerRoundTrip, Corpus) {
  REQUIRE_MODEL();
  std::vector<Doc> docs = mixed_docs();
  if (fs::exists(wiki_path()))
    for (Doc& d : wiki_docs()) docs.push_back(std::move(d));
  const std::vector<const Tokenizer*> toks = {shared().tok.get(), &pre_variant("llama-bpe"), &pre_variant("qwen2"),
                                              &pre_variant("default")};
  for (const Tokenizer* tok : toks) {
    for (size_t d = 0; d < docs.size(); ++d) {
      // Special-token texts come back through the plain-text path, or as rendered control tokens.
      EXPECT_EQ(tok->decode(tok->encode(docs[d], false, false)), docs[d]) << tok->pre_type() << " document " << d;
      EXPECT_EQ(tok->decode(tok->encode(docs[d], false, true), true), docs[d]) << tok->pre_type() << " document " << d;
    }
  }
}

// ---- Special tokens, ids, flags --------------------------------------------------------------------

TEST(TokenizerSpecial, Basics) {
  REQUIRE_MODEL();
  const Tokenizer& tok = *shared().tok;
  EXPECT_EQ(tok.n_vocab(), 49152);
  EXPECT_EQ(tok.model_type(), "gpt2");
  EXPECT_EQ(tok.pre_type(), "smollm");
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.token_text(0), "<|endoftext|>");
  EXPECT_EQ(tok.token_text(1), "<|im_start|>");
  EXPECT_EQ(tok.token_text(2), "<|im_end|>");
  // End of generation as llama.cpp decides it: eos, <|endoftext|>, and <reponame> (its FIM "repo" token).
  EXPECT_TRUE(tok.is_eog(2));
  EXPECT_TRUE(tok.is_eog(0));
  EXPECT_TRUE(tok.is_eog(4));
  EXPECT_FALSE(tok.is_eog(1));
  EXPECT_FALSE(tok.is_eog(3));
  EXPECT_FALSE(tok.is_eog(100));
  EXPECT_FALSE(tok.is_eog(-1));
  EXPECT_FALSE(tok.is_eog(tok.n_vocab()));
  EXPECT_THROW(tok.token_text(-1), tappa::Error);
  EXPECT_THROW(tok.token_to_piece(tok.n_vocab()), tappa::Error);
}

TEST(TokenizerSpecial, ParseSpecial) {
  REQUIRE_MODEL();
  const Tokenizer& tok = *shared().tok;
  const std::string text = "<|im_start|>user\nHi<|im_end|>\n";
  const Ids special = tok.encode(text, true, true);
  ASSERT_GE(special.size(), 4u);
  EXPECT_EQ(special.front(), 1);
  EXPECT_EQ(std::count(special.begin(), special.end(), 2), 1);
  const Ids plain = tok.encode(text, true, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
  EXPECT_GT(plain.size(), special.size());
  // The text between special tokens is tokenized on its own.
  Ids expected = {1};
  for (int32_t id : tok.encode("user\nHi", false, false)) expected.push_back(id);
  expected.push_back(2);
  for (int32_t id : tok.encode("\n", false, false)) expected.push_back(id);
  EXPECT_EQ(special, expected);
  // Control tokens render as "" unless asked for.
  EXPECT_EQ(tok.token_to_piece(1), "");
  EXPECT_EQ(tok.token_to_piece(1, true), "<|im_start|>");
  EXPECT_EQ(tok.decode(special), "user\nHi\n");
  EXPECT_EQ(tok.decode(special, true), text);
  // Adjacent and repeated special tokens; a longer special token wins over a shorter one inside it.
  EXPECT_EQ(tok.encode("<|im_end|><|im_end|><|endoftext|>", false, true), (Ids{2, 2, 0}));
  EXPECT_TRUE(tok.encode("", true, true).empty());
}

TEST(TokenizerSpecial, UserDefinedTokensAreAlwaysSplit) {
  REQUIRE_MODEL();
  // Mark <|im_start|> as user-defined (type 4): llama.cpp splits those off even without parse_special
  // and renders them always.
  const Tokenizer tok = load_variant("user_defined", [](Metadata& m) {
    for (auto& [key, value] : m) {
      if (key != "tokenizer.ggml.token_type") continue;
      auto& arr = std::get<tappa::GgufArray>(value.data);
      arr.values[1] = GgufValue::i32(4);
    }
  });
  const Ids ids = tok.encode("a<|im_start|>b", false, false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 1);
  EXPECT_EQ(tok.token_to_piece(1), "<|im_start|>");
  EXPECT_EQ(tok.decode(ids), "a<|im_start|>b");
  EXPECT_FALSE(tok.is_eog(1));
}

// ---- BOS / EOS --------------------------------------------------------------------------------------

TEST(TokenizerBos, Rules) {
  REQUIRE_MODEL();
  const Tokenizer& smol = *shared().tok;  // add_bos_token = false in the file
  EXPECT_EQ(smol.encode("Hello", true, false), smol.encode("Hello", false, false));

  // Without the key, llama.cpp's default depends on the pre-tokenizer: llama-bpe adds BOS.
  const Tokenizer& llama = pre_variant("llama-bpe");
  EXPECT_TRUE(llama.add_bos());
  const Ids with = llama.encode("Hello", true, false);
  const Ids without = llama.encode("Hello", false, false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(with.front(), 1);
  EXPECT_FALSE(pre_variant("qwen2").add_bos());
  EXPECT_EQ(pre_variant("qwen2").encode("Hello", true, false), pre_variant("qwen2").encode("Hello", false, false));
  // Empty text with add_special still gets BOS.
  EXPECT_EQ(llama.encode("", true, false), Ids{1});

  const Tokenizer both = load_variant("bos_eos", [](Metadata& m) {
    set_key(m, "tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
    set_key(m, "tokenizer.ggml.add_eos_token", GgufValue::boolean(true));
  });
  const Ids ids = both.encode("Hello", true, false);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(both.encode("Hello", false, false).size(), ids.size() - 2);

  // gpt2 defaults when the ids are absent: BOS = EOS = 11.
  const Tokenizer defaults = load_variant("no_ids", [](Metadata& m) {
    drop_key(m, "tokenizer.ggml.bos_token_id");
    drop_key(m, "tokenizer.ggml.eos_token_id");
    set_key(m, "tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  });
  EXPECT_EQ(defaults.bos(), 11);
  EXPECT_EQ(defaults.eos(), 11);
  EXPECT_EQ(defaults.encode("x", true, false).front(), 11);
  EXPECT_TRUE(defaults.is_eog(11));
}

// ---- Chat templates ---------------------------------------------------------------------------------

TEST(TokenizerChatTemplate, SmolLM2) {
  REQUIRE_MODEL();
  const Tokenizer& tok = *shared().tok;
  ASSERT_NE(tok.chat_template().find("You are a helpful AI assistant named SmolLM, trained by Hugging Face"), std::string::npos);
  const std::vector<ChatMessage> conv = {{"user", "What is 2+2?"}, {"assistant", "4."}};
  const std::string expected =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
      "<|im_start|>assistant\n4.<|im_end|>\n";
  EXPECT_EQ(tok.apply_chat_template(conv, false), expected);
  EXPECT_EQ(tok.apply_chat_template(conv, true), expected + "<|im_start|>assistant\n");

  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(tok.apply_chat_template(with_system, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // The rendered prompt tokenizes into the chat's control tokens.
  const Ids ids = tok.encode(tok.apply_chat_template(conv, true), true, true);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 4);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 3);
}

TEST(TokenizerChatTemplate, Llama3AndErrors) {
  REQUIRE_MODEL();
  const std::string llama3_template =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
      "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
      "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
  const Tokenizer llama = load_variant("llama3_template", [&](Metadata& m) {
    set_key(m, "tokenizer.chat_template", GgufValue::str(llama3_template));
  });
  const std::vector<ChatMessage> conv = {{"user", "  Hello there \n"}, {"assistant", "Hi!"}};
  EXPECT_EQ(llama.apply_chat_template(conv, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");

  const Tokenizer other = load_variant("other_template", [](Metadata& m) {
    set_key(m, "tokenizer.chat_template", GgufValue::str("{{ messages[0]['content'] }}[INST]"));
  });
  EXPECT_THROW(other.apply_chat_template(conv, true), tappa::Error);
  const Tokenizer none = load_variant("no_template", [](Metadata& m) { drop_key(m, "tokenizer.chat_template"); });
  EXPECT_EQ(none.chat_template(), "");
  EXPECT_THROW(none.apply_chat_template(conv, true), tappa::Error);
}

// ---- Hostile input ----------------------------------------------------------------------------------

// Each hostile input is encoded at two sizes, n and 4n: besides "no crash, ids in range, round trip",
// the work the tokenizer does (tok::work_units: code points scanned, BPE symbols and queue operations,
// bytes searched for special tokens) must grow about linearly, so a quadratic scan or merge loop fails
// here deterministically, in any build, instead of as a timing that depends on the machine. The speed
// itself is measured by bench/tokenizer_bench.cpp.
TEST(TokenizerHostile, NoCrashNoQuadraticWork) {
  REQUIRE_MODEL();
  const Tokenizer& tok = *shared().tok;
  const Tokenizer& llama = pre_variant("llama-bpe");
  auto repeat = [](std::string_view unit, size_t bytes) {
    std::string s;
    s.reserve(bytes + unit.size());
    while (s.size() < bytes) s += unit;
    return s;
  };
  struct Input {
    std::string name, unit;
    bool valid_utf8;
  };
  const std::vector<Input> inputs = {
      {"a", "a", true},
      {"space", " ", true},
      {"newline", "\n", true},
      {"digit", "7", true},
      {"0x80", "\x80", false},
      {"NUL", std::string(1, '\0'), true},
      {"apostrophe", "'", false},
      {"e-acute", "\xc3\xa9", true},
      {"<|im_end|>", "<|im_end|>", false},
      {"space/crlf/tab mix", " \r\n\t", true},
      {"words", "the cat's 12345 b\xc3\xa9" "b\xc3\xa9 ... !? ", true},
  };
  const size_t mb = 1 << 20;
  for (const Input& in : inputs) {
    // SmolLM2 without parse_special, and the Llama 3 pre-tokenizer with it.
    for (const auto& [t, ps] : {std::pair{&tok, false}, std::pair{&llama, true}}) {
      uint64_t work[2] = {0, 0};
      size_t n_ids[2] = {0, 0};
      for (int k = 0; k < 2; ++k) {
        const std::string text = repeat(in.unit, k == 0 ? mb / 4 : mb);
        Ids ids;
        const uint64_t before = tappa::tok::work_units;
        ASSERT_NO_THROW(ids = t->encode(text, false, ps)) << in.name;
        work[k] = tappa::tok::work_units - before;
        n_ids[k] = ids.size();
        for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->n_vocab()) << in.name;
        std::string back;
        ASSERT_NO_THROW(back = t->decode(ids, ps)) << in.name;
        if (in.valid_utf8) {
          EXPECT_TRUE(back == text) << in.name << ": decode(encode(x)) != x";
        }
      }
      std::printf("[ hostile  ] %-20s %-9s parse_special=%d: %8zu tokens, work %llu -> %llu (x%.2f for x4 input)\n",
                  in.name.c_str(), t->pre_type().c_str(), ps, n_ids[1], static_cast<unsigned long long>(work[0]),
                  static_cast<unsigned long long>(work[1]), static_cast<double>(work[1]) / std::max<uint64_t>(work[0], 1));
      EXPECT_GT(work[0], 0u) << in.name;
      // Linear: x4 (the first run also warms the word cache, which only lowers the second). Quadratic
      // would be x16; n log n counted this way is still x4.
      EXPECT_LE(work[1], 5 * work[0] + 1000) << in.name << " (" << t->pre_type() << "): work grows faster than the input";
    }
  }
  // Sequences above U+10FFFF (llama.cpp throws on them) and lone bytes; the empty text.
  for (const std::string& text : {std::string("a\xf4\x90\x80\x80 b\xf7\xbf\xbf\xbf c\xf5\x80\x80\x80"), std::string()}) {
    Ids ids;
    ASSERT_NO_THROW(ids = tok.encode(text, false, false));
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.n_vocab());
    EXPECT_NO_THROW((void)tok.decode(ids));
  }
  // Invalid bytes become U+FFFD, as in llama.cpp.
  EXPECT_EQ(tok.decode(tok.encode("\x80", false, false)), "\xef\xbf\xbd");
  EXPECT_EQ(tok.decode(tok.encode("a\xf4\x90\x80\x80", false, false)), "a\xef\xbf\xbd");
}

// A quadratic algorithm is caught by the counter, not only by a slow test: a scan that restarts
// from the beginning for each position does x16 the work for a x4 input.
TEST(TokenizerHostile, WorkCounterSeesQuadraticScans) {
  auto quadratic = [](size_t n) {
    const uint64_t before = tappa::tok::work_units;
    std::vector<uint32_t> cps(n, 'a');
    // pre_split over each prefix: what a scanner that rescans its piece per match would do.
    for (size_t i = 1; i <= n; ++i) {
      std::vector<uint32_t> prefix(cps.begin(), cps.begin() + static_cast<std::ptrdiff_t>(i));
      (void)tappa::tok::pre_split(tappa::tok::PreType::Gpt2, prefix);
    }
    return tappa::tok::work_units - before;
  };
  const uint64_t small = quadratic(64), large = quadratic(256);
  EXPECT_GT(large, 5 * small + 1000);
}

TEST(TokenizerHostile, ConcurrentEncode) {
  REQUIRE_MODEL();
  // encode() is const and shares a word cache between callers: several threads at once must get the
  // same ids as one thread alone.
  const Tokenizer tok = Tokenizer::from_gguf(*shared().file);
  const std::vector<Doc> docs = mixed_docs();
  std::vector<Ids> expected;
  for (const Doc& d : docs) expected.push_back(shared().tok->encode(d, true, false));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = 0; i < docs.size(); ++i)
          if (tok.encode(docs[(i + t * 7) % docs.size()], true, false) != expected[(i + t * 7) % docs.size()]) ++mismatches[t];
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

// ---- Metadata errors --------------------------------------------------------------------------------

void expect_load_error(const std::string& name, const std::function<void(Metadata&)>& edit, const std::string& needle) {
  try {
    const GgufFile f = GgufFile::open(write_variant(name, edit));
    (void)Tokenizer::from_gguf(f);
    ADD_FAILURE() << name << ": expected tappa::Error mentioning '" << needle << "'";
  } catch (const tappa::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << name << ": " << e.what();
  }
}

TEST(TokenizerErrors, MissingOrBadKeys) {
  REQUIRE_MODEL();
  expect_load_error("no_model", [](Metadata& m) { drop_key(m, "tokenizer.ggml.model"); }, "tokenizer.ggml.model");
  expect_load_error("no_tokens", [](Metadata& m) { drop_key(m, "tokenizer.ggml.tokens"); }, "tokenizer.ggml.tokens");
  expect_load_error("no_merges", [](Metadata& m) { drop_key(m, "tokenizer.ggml.merges"); }, "tokenizer.ggml.merges");
  expect_load_error("bad_pre", [](Metadata& m) { set_key(m, "tokenizer.ggml.pre", GgufValue::str("klingon-bpe")); }, "klingon-bpe");
  expect_load_error("wpm_model", [](Metadata& m) { set_key(m, "tokenizer.ggml.model", GgufValue::str("bert")); }, "bert");
  expect_load_error("tokens_not_strings", [](Metadata& m) {
    set_key(m, "tokenizer.ggml.tokens", GgufValue::array(tappa::GgufType::INT32, {GgufValue::i32(1)}));
  }, "tokenizer.ggml.tokens");
  expect_load_error("short_types", [](Metadata& m) {
    set_key(m, "tokenizer.ggml.token_type", GgufValue::array(tappa::GgufType::INT32, {GgufValue::i32(1)}));
  }, "tokenizer.ggml.token_type");
  expect_load_error("model_not_string", [](Metadata& m) { set_key(m, "tokenizer.ggml.model", GgufValue::u32(2)); },
                    "tokenizer.ggml.model");
  // A missing pre-tokenizer is allowed (llama.cpp falls back to "default").
  const Tokenizer t = load_variant("no_pre", [](Metadata& m) { drop_key(m, "tokenizer.ggml.pre"); });
  EXPECT_EQ(t.pre_type(), "");
  EXPECT_FALSE(t.encode("hello world", false, false).empty());
}

}  // namespace

// ---- Internals: code point classes and pre-tokenizer splits ------------------------------------------
// These pin down facts that the golden files can only show through merges that happen to cross a word
// boundary: the Unicode version of the class table (llama.cpp uses 15.1), the whitespace set, the lenient
// UTF-8 decoding, and the split rules' quirks.

TEST(TokenizerUnicode, ClassTable) {
  using namespace tappa::tok;
  EXPECT_EQ(cp_class('a'), kLetter);
  EXPECT_EQ(cp_class('7'), kNumber);
  EXPECT_EQ(cp_class('!'), kPunct);
  EXPECT_EQ(cp_class('$'), kSymbol);
  EXPECT_EQ(cp_class('`'), kSymbol);
  EXPECT_EQ(cp_class(0x0301), kMark);
  EXPECT_EQ(cp_class(0x00B2), kNumber);    // superscript two (No)
  EXPECT_EQ(cp_class(0x2167), kNumber);    // Roman numeral eight (Nl)
  EXPECT_EQ(cp_class(0xFFFD), kSymbol);
  EXPECT_EQ(cp_class(0xE000), kControl);   // private use
  EXPECT_EQ(cp_class(0x200B), kControl);   // zero width space is Cf, not a space
  EXPECT_EQ(cp_class(0x0378), kUnassigned);
  EXPECT_EQ(cp_class(0x110000), kUnassigned);
  // Unicode 15.0 and 15.1 additions are classified; Unicode 16.0 ones are not yet.
  EXPECT_EQ(cp_class(0x1E4F0), kNumber);   // 15.0 Nag Mundari digit zero
  EXPECT_EQ(cp_class(0x11F04), kLetter);   // 15.0 Kawi letter
  EXPECT_EQ(cp_class(0x2EBF0), kLetter);   // 15.1 CJK extension I
  EXPECT_EQ(cp_class(0x31EF), kSymbol);    // 15.1 CJK stroke
  EXPECT_EQ(cp_class(0x1C89), kUnassigned);   // 16.0 Cyrillic capital TJE
  EXPECT_EQ(cp_class(0x1E5F1), kUnassigned);  // 16.0 Ol Onal digit one
  for (uint32_t cp : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u,
                      0x2029u, 0x202Fu, 0x205Fu, 0x3000u})
    EXPECT_TRUE(cp_flags(cp) & kWhitespace) << std::hex << cp;
  for (uint32_t cp : {0x00u, 0x1Cu, 0x200Bu, 0x180Eu, 0xFEFFu, 0x2060u, 0x61u})
    EXPECT_FALSE(cp_flags(cp) & kWhitespace) << std::hex << cp;
}

TEST(TokenizerUnicode, LenientUtf8) {
  using namespace tappa::tok;
  auto dec = [](std::string_view s) {
    std::vector<uint32_t> out;
    decode_utf8_lenient(s, out);
    return out;
  };
  using V = std::vector<uint32_t>;
  EXPECT_EQ(dec("a\xc3\xa9"), (V{'a', 0xE9}));
  EXPECT_EQ(dec(std::string_view("\xc0\x80", 2)), (V{0}));          // overlong, decoded as is
  EXPECT_EQ(dec("\xed\xa0\x80"), (V{0xD800}));                        // surrogate, decoded as is
  EXPECT_EQ(dec("\x80x"), (V{0xFFFD, 'x'}));                          // stray continuation byte
  EXPECT_EQ(dec("\xe4\xb8"), (V{0xFFFD, 0xFFFD}));                    // truncated: each byte alone
  EXPECT_EQ(dec("\xe4" "a\xb8"), (V{0xFFFD, 'a', 0xFFFD}));
  EXPECT_EQ(dec("\xf8\xff"), (V{0xFFFD, 0xFFFD}));
  EXPECT_EQ(dec("\xf4\x90\x80\x80"), (V{0xFFFD}));                    // above U+10FFFF
  EXPECT_EQ(dec("\xf0\x9f\x98\x80"), (V{0x1F600}));
}

std::vector<std::string> split(tappa::tok::PreType type, std::string_view text) {
  std::vector<uint32_t> cps;
  tappa::tok::decode_utf8_lenient(text, cps);
  std::vector<std::string> words;
  size_t start = 0;
  for (size_t len : tappa::tok::pre_split(type, cps)) {
    std::string w;
    for (size_t i = start; i < start + len; ++i) tappa::tok::append_utf8(w, cps[i]);
    words.push_back(w);
    start += len;
  }
  return words;
}

TEST(TokenizerUnicode, PreSplit) {
  using tappa::tok::PreType;
  using W = std::vector<std::string>;
  EXPECT_EQ(split(PreType::Gpt2, "Hello  world's 42!?"), (W{"Hello", " ", " world", "'s", " 42", "!?"}));
  EXPECT_EQ(split(PreType::Gpt2, "a   "), (W{"a", "   "}));  // trailing spaces stay together
  EXPECT_EQ(split(PreType::Gpt2, "I'LL"), (W{"I", "'", "LL"}));  // GPT-2 contractions are lower case only
  EXPECT_EQ(split(PreType::Smollm, "a 123"), (W{"a", " ", "1", "2", "3"}));
  EXPECT_EQ(split(PreType::Smollm, "x\xd9\xa3y"), (W{"x", "\xd9\xa3", "y"}));  // Arabic-Indic three is \p{N}
  EXPECT_EQ(split(PreType::Llama3, "I'LL 12345 \tword"), (W{"I", "'LL", " ", "123", "45", " ", "\tword"}));
  EXPECT_EQ(split(PreType::Llama3, "a\r\n\r\n  b"), (W{"a", "\r\n\r\n", " ", " b"}));
  EXPECT_EQ(split(PreType::Llama3, "x  \n y"), (W{"x", "  \n", " y"}));
  EXPECT_EQ(split(PreType::Llama3, "(a) !!\n\nb "), (W{"(a", ")", " !!\n\n", "b", " "}));
  EXPECT_EQ(split(PreType::Qwen2, "12 a"), (W{"1", "2", " a"}));
  EXPECT_EQ(split(PreType::Default, "a,b!! 12345x"), (W{"a", ",", "b", "!!", " ", "123", "45", "x"}));
  EXPECT_TRUE(split(PreType::Llama3, "").empty());
}
