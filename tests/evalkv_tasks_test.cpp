// Task generators: deterministic (same seed → same prompt bytes, checked against committed hashes),
// sized to the requested length, with the gold answers really in the context.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "evalkv/tasks.h"
#include "tappa/error.h"
#include "test_util.h"

namespace {

using namespace tappa::evalkv;

// Whitespace-separated words: a stand-in tokenizer that needs no model.
int word_count(std::string_view s) {
  int n = 0;
  bool in = false;
  for (char c : s) {
    const bool sp = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!sp && !in) ++n;
    in = !sp;
  }
  return n;
}

const Haystacks& hay() {
  static const Haystacks h = [] {
    std::ifstream f(tappa::test::source_dir() + "/tests/data/evalkv/haystack.txt");
    std::stringstream ss;
    ss << f.rdbuf();
    // The vocabulary of the test text is small; cwe needs ≥ 100 distinct words, so add numbered ones.
    std::string text = ss.str();
    for (int i = 0; i < 400; ++i) text += " word" + std::string(1, char('a' + i % 26)) + std::string(1, char('a' + i / 26)) + "x.";
    return Haystacks::from_text(text);
  }();
  return h;
}

uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

uint64_t sample_hash(const TaskSample& s) {
  uint64_t h = fnv1a(s.context);
  h = fnv1a("\x1f" + s.question + "\x1f" + s.answer_prefix, h);
  for (const auto& o : s.outputs) h = fnv1a("\x1e" + o, h);
  return h;
}

std::string hash_file() { return tappa::test::source_dir() + "/tests/data/evalkv/task_hashes.json"; }

TEST(EvalKvTasks, SameSeedSamePromptBytesAndCommittedHashes) {
  std::map<std::string, std::string> now;
  for (const auto& task : ruler_task_names()) {
    for (int i = 0; i < 3; ++i) {
      const TaskSample a = generate_task(hay(), task, 600, i, 1234, word_count);
      const TaskSample b = generate_task(hay(), task, 600, i, 1234, word_count);
      EXPECT_EQ(a.prompt(), b.prompt()) << task << " " << i;
      EXPECT_EQ(a.outputs, b.outputs);
      const TaskSample c = generate_task(hay(), task, 600, i, 1235, word_count);
      EXPECT_NE(sample_hash(a), sample_hash(c)) << task << ": another seed must give another prompt";
      char buf[17];
      std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(sample_hash(a)));
      now[task + "/" + std::to_string(i)] = buf;
    }
  }
  if (std::getenv("TAPPA_WRITE_TASK_HASHES")) {
    std::ofstream(hash_file()) << nlohmann::json(now).dump(1) << "\n";
    GTEST_SKIP() << "wrote " << hash_file();
  }
  std::ifstream f(hash_file());
  ASSERT_TRUE(f) << hash_file();
  const auto committed = nlohmann::json::parse(f).get<std::map<std::string, std::string>>();
  EXPECT_EQ(committed, now) << "a generator changed its output for the same seed";
}

TEST(EvalKvTasks, FitTheLengthAndHoldTheirAnswers) {
  for (const auto& task : ruler_task_names()) {
    for (int length : {300, 1200}) {
      const TaskSample s = generate_task(hay(), task, length, 1, 7, word_count);
      SCOPED_TRACE(task + " " + std::to_string(length));
      const int n = word_count(s.prompt());
      EXPECT_LE(n + s.max_new_tokens, length);
      // The binary search fills the length: less than ~10% is left unused (one filler unit is at
      // most ~15 words, one cwe entry 3 × 2 words).
      EXPECT_GT(n + s.max_new_tokens, length * 0.9 - 20);
      ASSERT_FALSE(s.outputs.empty());
      for (const auto& o : s.outputs) EXPECT_NE(s.context.find(o), std::string::npos) << o;
      EXPECT_EQ(s.metric, "string_match_all");
    }
  }
}

TEST(EvalKvTasks, SingleNeedleDepthSweep) {
  // Samples 0..4 sweep the depth 0, 0.25, 0.5, 0.75, 1 (then repeat).
  double prev = -1;
  for (int i = 0; i < 5; ++i) {
    const TaskSample s = generate_task(hay(), "niah_single_numbers", 1500, i, 3, word_count);
    EXPECT_DOUBLE_EQ(s.depth, i / 4.0);
    const double where = static_cast<double>(s.context.find(s.outputs[0])) / s.context.size();
    EXPECT_GT(where, prev);
    EXPECT_NEAR(where, s.depth, 0.1);  // a needle goes to the next sentence boundary (sentences ≈ 1% here)
    prev = where;
  }
  EXPECT_DOUBLE_EQ(sweep_depth(5, 5), 0.0);
  EXPECT_DOUBLE_EQ(sweep_depth(0, 1), 0.5);
}

TEST(EvalKvTasks, VariantsHaveTheirShapes) {
  const auto mk = generate_task(hay(), "niah_multikey", 1200, 0, 5, word_count);
  EXPECT_EQ(mk.outputs.size(), 1u);
  size_t needles = 0;
  for (size_t p = mk.context.find("special magic numbers for"); p != std::string::npos;
       p = mk.context.find("special magic numbers for", p + 1))
    ++needles;
  EXPECT_EQ(needles, 4u);  // one queried + three distractor keys
  EXPECT_EQ(generate_task(hay(), "niah_multivalue", 1200, 0, 5, word_count).outputs.size(), 4u);
  EXPECT_EQ(generate_task(hay(), "niah_multiquery", 1200, 0, 5, word_count).outputs.size(), 4u);
  const auto uu = generate_task(hay(), "niah_single_uuids", 1200, 0, 5, word_count);
  ASSERT_EQ(uu.outputs[0].size(), 36u);
  EXPECT_EQ(uu.outputs[0][14], '4');
  const auto vt = generate_task(hay(), "vt", 1200, 0, 5, word_count);
  EXPECT_EQ(vt.outputs.size(), 5u);
  // The chain reads in order: VAR x1 = VAR x0 comes after x0's assignment.
  EXPECT_LT(vt.context.find("VAR " + vt.outputs[0] + " ="), vt.context.find("VAR " + vt.outputs[1] + " ="));
  const auto cwe = generate_task(hay(), "cwe", 1200, 0, 5, word_count);
  ASSERT_EQ(cwe.outputs.size(), 10u);
  auto occurrences = [&](const std::string& w) {
    size_t n = 0;
    const std::string needle = ". " + w + " ";
    for (size_t p = cwe.context.find(needle); p != std::string::npos; p = cwe.context.find(needle, p + 1)) ++n;
    if (cwe.context.size() >= w.size() + 2 && cwe.context.compare(cwe.context.size() - w.size() - 2, w.size() + 2, ". " + w) == 0) ++n;
    return n;
  };
  for (const auto& w : cwe.outputs) EXPECT_EQ(occurrences(w), 7u) << w;  // 1200 / 160 = 7 copies
  const auto pk = generate_task(hay(), "passkey", 500, 0, 5, word_count);
  EXPECT_EQ(pk.outputs[0].size(), 5u);
}

TEST(EvalKvTasks, BadRequestsThrowOneClearError) {
  EXPECT_THROW(generate_task(hay(), "niah_single_words", 20, 0, 1, word_count), tappa::Error);
  EXPECT_THROW(generate_task(hay(), "no_such_task", 1000, 0, 1, word_count), tappa::Error);
  EXPECT_THROW(generate_task(hay(), "niah_multivalue", 70, 0, 1, word_count), tappa::Error);
}

TEST(EvalKvTasks, RealDataHaystacksLoad) {
  const std::string dir = tappa::test::data_dir();
  if (!tappa::test::exists(dir + "/ruler/PaulGrahamEssays.json")) GTEST_SKIP() << "no shared data at " << dir;
  const Haystacks h = Haystacks::load(dir);
  EXPECT_GT(h.essays.size(), 2'000'000u);
  EXPECT_GT(h.niah.size(), 300'000u);
  EXPECT_GT(h.wikitext.size(), 1'000'000u);
  EXPECT_GT(h.vocabulary.size(), 5000u);
  EXPECT_THROW(Haystacks::load("/nonexistent/dir"), tappa::Error);
}

}  // namespace
