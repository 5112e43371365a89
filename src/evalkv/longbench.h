// LongBench-format JSONL: one record per line with the fields input, context, answers (list of
// strings), length, dataset, language, all_classes (list or null), _id. `parse_longbench_line` is a
// pure function of one line (no I/O), so it can be fuzzed; it throws tappa::Error with the reason.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "evalkv/tasks.h"

namespace tappa::evalkv {

struct LongBenchRecord {
  std::string input;    // the question (empty for summarisation tasks)
  std::string context;
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;
  std::string dataset;
  std::string language;
  std::string id;
  int length = 0;       // LongBench's word count
};

LongBenchRecord parse_longbench_line(std::string_view line);

// Every non-blank line of a file; errors name the file and the 1-based line.
std::vector<LongBenchRecord> read_longbench_file(const std::string& path);

// The prompt of a record split as TaskSample wants it: LongBench's dataset2prompt template (our
// transcription for the English tasks; a generic "context, question, answer" template for others),
// with the part before the context's end as `context` and the instruction/question after it as
// `question`. `max_prompt_tokens` truncates the context in the middle (LongBench keeps the first and
// last halves) so that prompt + max_new_tokens fits. max_new_tokens: LongBench's dataset2maxlen,
// capped by `max_new_cap` (> 0).
// Whether LongBench's pred.py wraps a dataset's prompt in the chat template (false for trec,
// triviaqa, samsum, lsht, lcc, repobench-p).
bool longbench_uses_chat_template(std::string_view dataset);

// `dataset` is the record's own field, else `task` without a "longbench_" prefix. samsum stops at
// the first newline (pred.py adds "\n" to the end-of-generation tokens for it).
TaskSample longbench_sample(const LongBenchRecord& rec, const std::string& task, int index, int max_prompt_tokens,
                            int max_new_cap, const TokenCounter& count,
                            const std::function<std::string(std::string_view, int, int)>& cut_tokens);

}  // namespace tappa::evalkv
