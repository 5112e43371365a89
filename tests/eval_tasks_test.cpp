// Loaders of the multiple-choice task files: exact prompts on small inputs, one clear error for
// each kind of malformed line, and the record counts of the real files (../shared/data README).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tappa/error.h"
#include "tappa/eval.h"
#include "test_util.h"

namespace {

using namespace tappa::eval;

using tappa::test::slurp;

TEST(EvalTasks, PiqaPrompt) {
  const auto items = parse_piqa("{\"goal\": \"Open a jar\", \"sol1\": \"Twist the lid.\", \"sol2\": \"Eat it.\"}\r\n", "1\n");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].gold, 1);
  EXPECT_EQ(items[0].choices[0].context, "Question: Open a jar\nAnswer:");
  EXPECT_EQ(items[0].choices[0].continuation, " Twist the lid.");
  EXPECT_EQ(items[0].choices[1].norm_len, 7u);  // "Eat it." without the delimiter space
  EXPECT_THROW(parse_piqa("{\"goal\": \"x\", \"sol1\": \"a\"}\n", "0\n"), tappa::Error);       // no sol2
  EXPECT_THROW(parse_piqa("{\"goal\": \"x\", \"sol1\": \"a\", \"sol2\": \"b\"}\n", "2\n"), tappa::Error);  // bad label
  EXPECT_THROW(parse_piqa("{\"goal\": \"x\", \"sol1\": \"a\", \"sol2\": \"b\"}\n", ""), tappa::Error);     // missing label
  EXPECT_THROW(parse_piqa("not json\n", "0\n"), tappa::Error);
  EXPECT_THROW(parse_piqa("", "0\n"), tappa::Error);  // extra label
}

TEST(EvalTasks, ArcPromptAndLabels) {
  const std::string line =
      R"({"id":"x","question":{"stem":"Which?","choices":[{"text":"a","label":"1"},{"text":"bb","label":"2"},{"text":"c","label":"3"}]},"answerKey":"2"})";
  const auto items = parse_arc(line + "\n");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].choices.size(), 3u);
  EXPECT_EQ(items[0].gold, 1);
  EXPECT_EQ(items[0].choices[1].context, "Question: Which?\nAnswer:");
  EXPECT_EQ(items[0].choices[1].continuation, " bb");
  EXPECT_THROW(parse_arc(R"({"question":{"stem":"q","choices":[{"text":"a","label":"A"},{"text":"b","label":"B"}]},"answerKey":"C"})"),
               tappa::Error);
  EXPECT_THROW(parse_arc(R"({"question":{"stem":"q","choices":[]},"answerKey":"A"})"), tappa::Error);
  EXPECT_THROW(parse_arc(R"({"question":"q","answerKey":"A"})"), tappa::Error);
}

TEST(EvalTasks, WinograndePartialScoring) {
  const auto items = parse_winogrande(
      R"({"context_options": ["Sarah was better so Sarah", "Sarah was better so Maria"], "continuation": " got the easy cases. ", "gold": 1})");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].gold, 1);
  EXPECT_EQ(items[0].choices[1].context, "Sarah was better so Maria");
  EXPECT_EQ(items[0].choices[0].continuation, " got the easy cases.");
  EXPECT_EQ(items[0].choices[1].continuation, " got the easy cases.");
  EXPECT_THROW(parse_winogrande(R"({"context_options": ["a"], "continuation": "b", "gold": 0})"), tappa::Error);
  EXPECT_THROW(parse_winogrande(R"({"context_options": ["a", "b"], "continuation": "c", "gold": 2})"), tappa::Error);
}

TEST(EvalTasks, HellaswagSixLines) {
  const std::string t = "Roof: A man is on a roof. he\n3\nis a.\nis b.\nis c.\nstarts d.\n";
  const auto items = parse_hellaswag(t);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].gold, 3);
  EXPECT_EQ(items[0].choices[3].context, "Roof: A man is on a roof. he");
  EXPECT_EQ(items[0].choices[3].continuation, " starts d.");
  EXPECT_THROW(parse_hellaswag("ctx\n3\na\nb\nc\n"), tappa::Error);      // 5 lines
  EXPECT_THROW(parse_hellaswag("ctx\n4\na\nb\nc\nd\n"), tappa::Error);   // label out of range
  EXPECT_THROW(parse_hellaswag("ctx\n1\na\n\nc\nd\n"), tappa::Error);    // empty ending
}

TEST(EvalTasks, TaskNames) {
  EXPECT_EQ(parse_task_name("arc_easy"), McTask::arc_easy);
  EXPECT_FALSE(task_uses_acc_norm(McTask::winogrande));
  EXPECT_TRUE(task_uses_acc_norm(McTask::hellaswag));
  EXPECT_THROW(parse_task_name("mmlu"), tappa::Error);
}

TEST(EvalTasks, RealFilesRecordCounts) {
  const std::string d = tappa::test::data_dir();
  if (!tappa::test::exists(d + "/piqa/valid.jsonl")) GTEST_SKIP() << "shared data not found at " << d;
  EXPECT_EQ(parse_piqa(slurp(d + "/piqa/valid.jsonl"), slurp(d + "/piqa/valid-labels.lst")).size(), 1838u);
  EXPECT_EQ(parse_arc(slurp(d + "/arc/ARC-Easy-Test.jsonl")).size(), 2376u);
  EXPECT_EQ(parse_arc(slurp(d + "/arc/ARC-Challenge-Test.jsonl")).size(), 1172u);
  const auto wg = parse_winogrande(slurp(d + "/winogrande/winogrande_dev.llmfoundry.jsonl"));
  EXPECT_EQ(wg.size(), 1267u);
  const auto hs = parse_hellaswag(slurp(d + "/hellaswag/hellaswag_val_full.part0.txt"));
  EXPECT_EQ(hs.size(), 3348u);
}

}  // namespace
