// LongBench JSONL reader: a pure per-line parser that throws tappa::Error on anything malformed, and
// the prompt/truncation built from a record.
#include <gtest/gtest.h>

#include "evalkv/longbench.h"
#include "tappa/error.h"
#include "test_util.h"

namespace {

using namespace tappa::evalkv;

TEST(EvalKvLongBench, ParsesARecord) {
  const auto r = parse_longbench_line(
      R"({"input": "q?", "context": "ctx", "answers": ["a1", "a2"], "length": 12, "dataset": "trec",)"
      R"( "language": "en", "all_classes": ["x", "y"], "_id": "id7"})");
  EXPECT_EQ(r.input, "q?");
  EXPECT_EQ(r.context, "ctx");
  EXPECT_EQ(r.answers, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(r.all_classes, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(r.dataset, "trec");
  EXPECT_EQ(r.length, 12);
  EXPECT_EQ(r.id, "id7");
  // all_classes null and input absent are fine
  const auto s = parse_longbench_line(R"({"context": "c", "answers": ["a"], "all_classes": null})");
  EXPECT_TRUE(s.all_classes.empty());
  EXPECT_TRUE(s.input.empty());
}

TEST(EvalKvLongBench, RejectsMalformedLines) {
  for (const char* bad : {"", "not json", "[1,2]", R"({"answers": ["a"]})", R"({"context": "c"})",
                          R"({"context": 5, "answers": ["a"]})", R"({"context": "c", "answers": "a"})",
                          R"({"context": "c", "answers": []})", R"({"context": "c", "answers": [1]})",
                          R"({"context": "c", "answers": ["a"], "length": -3})",
                          R"({"context": "c", "answers": ["a"], "all_classes": [null]})", "{\"context\": \"c\xff"}) {
    EXPECT_THROW(parse_longbench_line(bad), tappa::Error) << bad;
  }
}

TEST(EvalKvLongBench, ReadsAFileAndNamesTheBadLine) {
  const std::string good = tappa::test::source_dir() + "/tests/data/evalkv/multi_news_2.jsonl";
  const auto recs = read_longbench_file(good);
  ASSERT_EQ(recs.size(), 2u);  // the blank line between them is skipped
  EXPECT_EQ(recs[1].all_classes.size(), 2u);
  try {
    read_longbench_file(tappa::test::source_dir() + "/tests/data/evalkv/haystack.txt");
    FAIL();
  } catch (const tappa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("haystack.txt:1:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_longbench_file("/nonexistent.jsonl"), tappa::Error);
}

TEST(EvalKvLongBench, PromptAndMiddleTruncation) {
  const auto recs = read_longbench_file(tappa::test::source_dir() + "/tests/data/evalkv/multi_news_2.jsonl");
  auto words = [](std::string_view s) {
    int n = 0;
    bool in = false;
    for (char c : s) {
      const bool sp = c == ' ' || c == '\n';
      if (!sp && !in) ++n;
      in = !sp;
    }
    return n;
  };
  // Word-level "tokens": keep the first `head` words and the words from `tail_from` on.
  auto cut = [](std::string_view s, int head, int tail_from) {
    std::vector<std::string> w;
    std::string cur;
    for (char c : s) {
      if (c == ' ') {
        if (!cur.empty()) w.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) w.push_back(cur);
    std::string out;
    for (int i = 0; i < static_cast<int>(w.size()); ++i)
      if (i < head || i >= tail_from) out += (out.empty() ? "" : " ") + w[i];
    return out;
  };
  const TaskSample s = longbench_sample(recs[0], "longbench_multi_news", 0, 1000, 64, words, cut);
  EXPECT_EQ(s.metric, "rouge");
  EXPECT_EQ(s.max_new_tokens, 64);  // LongBench's 512, capped
  EXPECT_NE(s.context.find("Passage 2: Lamps now line the old road."), std::string::npos);  // not truncated
  EXPECT_NE(s.question.find("Summary:"), std::string::npos);
  // A tight length truncates the middle of the context: head and tail kept, the middle gone.
  const int fixed = words(s.prompt()) - words(recs[0].context);
  // 16 words of room for the 18-word context: the first 8 and the last 8 stay (words 9–10 go).
  const TaskSample t = longbench_sample(recs[0], "longbench_multi_news", 0, fixed + 64 + 16, 64, words, cut);
  EXPECT_NE(t.context.find("was rebuilt this"), std::string::npos);
  EXPECT_NE(t.context.find("Passage 2: Lamps now line the old road."), std::string::npos);
  EXPECT_EQ(t.context.find("spring."), std::string::npos);
  EXPECT_EQ(t.context.find("NEWLINE_CHAR"), std::string::npos);
  EXPECT_THROW(longbench_sample(recs[0], "longbench_multi_news", 0, 50, 64, words, cut), tappa::Error);
  const TaskSample q = longbench_sample(recs[1], "longbench:x", 0, 1000, 64, words, cut);
  EXPECT_EQ(q.metric, "classification");
  EXPECT_NE(q.question.find("Which class?"), std::string::npos);
}

}  // namespace
