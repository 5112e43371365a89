// Long-context tasks generated deterministically from a seed (RULER-style needle retrieval, variable
// tracking, common-words extraction, passkey), plus the samples read from LongBench-format JSONL and
// the fidelity texts. Every generator is a pure function of (haystack, task, length, index, seed,
// token counter): the same inputs give the same prompt bytes.
//
// A sample is split into the part a KV-compression method may compress (`context`) and the part that
// follows it (`question` + `answer_prefix`). Query-aware mode feeds all three as one prompt (the
// question sits in the observation window, as in SnapKV/CAKE/TAPPA's LongBench runs); query-agnostic
// mode compresses the context alone, then appends the question uncompressed (kvpress's setting).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tappa/eval.h"

namespace tappa::evalkv {

// Tokens of a text as the model counts them (no BOS). Tests pass a stub (e.g. whitespace words).
using TokenCounter = std::function<int(std::string_view)>;

enum class TaskKind { ruler, longbench, fidelity };

struct TaskSample {
  std::string task;
  int length = 0;     // target prompt length in tokens (generated tasks) or truncation length
  int index = 0;
  std::string context;
  std::string question;
  std::string answer_prefix;
  std::vector<std::string> outputs;      // gold answers
  std::vector<std::string> all_classes;  // LongBench classification
  std::string metric;                    // string_match_all, string_match_part, or a LongBench metric
  int max_new_tokens = 32;
  bool stop_at_newline = true;           // the answer is one line
  // LongBench: the dataset name (LongBench-E's "_e" dropped), and whether the prompt goes into the
  // model's chat template: LongBench's pred.py skips it for trec, triviaqa, samsum, lsht, lcc and
  // repobench-p (few-shot and code-completion prompts that continue raw text).
  std::string dataset;
  bool chat_template = true;
  double depth = -1.0;                   // needle depth in [0, 1] (single-needle tasks), else -1
  std::string prompt() const { return context + question + answer_prefix; }
};

// Text sources under the data folder (../shared/data): RULER's Paul Graham essays (the default
// haystack), the gkamradt NIAH essays and WikiText-2. Loaded once, whitespace-normalised.
struct Haystacks {
  std::string essays;     // ruler/PaulGrahamEssays.json "text"
  std::string niah;       // niah_paulgraham_essays/*.txt, sorted by name, concatenated
  std::string wikitext;   // wikitext2/wiki.test.reconstructed.raw
  std::vector<std::string> vocabulary;  // distinct lower-case words of the essays (cwe), sorted
  static Haystacks load(const std::string& data_dir);
  // For tests: one text serves as every source.
  static Haystacks from_text(std::string text);
};

// ruler_task_names(): include/tappa/eval.h.
bool is_ruler_task(std::string_view name);
// fidelity_wikitext, fidelity_essays.
bool is_fidelity_task(std::string_view name);

// Builds sample `index` of a generated task at `length` tokens (prompt + max_new_tokens ≤ length as
// counted by `count`). Throws tappa::Error on an unknown task or a length too small for the task.
TaskSample generate_task(const Haystacks& hay, const std::string& task, int length, int index, uint64_t seed,
                         const TokenCounter& count);

// The needle depth of sample `index` of `n` in a depth sweep: evenly from 0 to 1 (0.5 when n = 1).
double sweep_depth(int index, int n);

// Fidelity text: a window of the source starting at a seeded offset, long enough for `length` prefix
// tokens plus the continuation (the caller tokenizes and cuts).
std::string fidelity_text(const Haystacks& hay, const std::string& task, int length, int index, uint64_t seed);

}  // namespace tappa::evalkv
