// The tokenizer test corpus by the rules of scripts/make_tokenizer_corpus.py (wiki documents from
// ../shared/data, then tests/data/tokenizer/mixed.txt; hostile.hex apart), and the golden id files
// scripts/gen_tokenizer_golden.sh writes from llama.cpp's llama-tokenize.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "tappa/tokenizer.h"
#include "test_util.h"

namespace tappa::test {

using Ids = std::vector<int32_t>;

inline std::string tokenizer_data(const std::string& name) { return source_dir() + "/tests/data/tokenizer/" + name; }
inline std::string wiki_path() { return data_dir() + "/wikitext2/wiki.test.reconstructed.raw"; }

// The first 160 KiB of WikiText-2's test text cut after a newline, in documents of >= 2048 bytes.
inline std::vector<std::string> wiki_docs() {
  std::string raw = slurp(wiki_path());
  raw.resize(std::min<size_t>(raw.size(), 163840));
  raw.resize(raw.rfind('\n') + 1);
  std::vector<std::string> docs;
  std::string cur;
  for (size_t pos = 0; pos < raw.size();) {
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

inline std::vector<std::string> mixed_docs() {
  const std::string text = slurp(tokenizer_data("mixed.txt"));
  const std::string sep = "\n=====DOC=====\n";
  std::vector<std::string> docs;
  size_t pos = 0;
  for (size_t at; (at = text.find(sep, pos)) != std::string::npos; pos = at + sep.size()) docs.push_back(text.substr(pos, at - pos));
  docs.push_back(text.substr(pos));
  return docs;
}

inline std::vector<std::string> hostile_docs() {
  std::istringstream in(slurp(tokenizer_data("hostile.hex")));
  std::vector<std::string> docs;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::string d;
    for (size_t i = 0; i + 1 < line.size(); i += 2) d.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
    docs.push_back(d);
  }
  return docs;
}

inline std::vector<Ids> read_tokenizer_golden(const std::string& name) {
  std::istringstream in(slurp(tokenizer_data(name)));
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

// Every document encoded with add_special = true must give llama.cpp's ids exactly.
inline void expect_tokenizer_golden(const Tokenizer& tok, const std::vector<std::string>& docs, const std::string& golden_name,
                                    bool parse_special) {
  const std::vector<Ids> golden = read_tokenizer_golden(golden_name);
  ASSERT_EQ(golden.size(), docs.size()) << golden_name << " does not match the corpus: regenerate it with scripts/gen_tokenizer_golden.sh";
  size_t bad = 0, tokens = 0, bytes = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    const Ids got = tok.encode(docs[d], true, parse_special);
    tokens += golden[d].size();
    bytes += docs[d].size();
    if (got == golden[d]) continue;
    ++bad;
    size_t k = 0;
    while (k < got.size() && k < golden[d].size() && got[k] == golden[d][k]) ++k;
    ADD_FAILURE() << golden_name << ": document " << d << " differs at token " << k << " (got " << got.size()
                  << " tokens, expected " << golden[d].size() << ")"
                  << (k < got.size() ? " got id " + std::to_string(got[k]) : "")
                  << (k < golden[d].size() ? " expected id " + std::to_string(golden[d][k]) : "");
  }
  EXPECT_EQ(bad, 0u) << golden_name << ": " << bad << " of " << docs.size() << " documents differ";
  std::printf("[ golden   ] %s: %zu documents, %zu bytes, %zu tokens, %zu differ\n", golden_name.c_str(), docs.size(), bytes,
              tokens, bad);
}

}  // namespace tappa::test
