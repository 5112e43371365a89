// Multiple-choice tasks as lm-evaluation-harness poses them to a language model, loaded from the
// offline copies in ../shared/data (see its README). Every loader is a pure function of the file
// text: no I/O, no global state, and every malformed line is one tappa::Error naming the task and
// the line — so a fuzzer can drive them directly.
//
// Each choice is a (context, continuation) pair; the model scores log P(continuation | context).
//   PIQA          "Question: {goal}\nAnswer:" + " {sol}"                         acc_norm
//   ARC-E / ARC-C "Question: {stem}\nAnswer:" + " {choice text}"                 acc_norm
//   WinoGrande    "{sentence up to the blank, option filled in}" + " {rest}"      acc (partial scoring:
//                 only the words after the blank are scored, under each option's context)
//   HellaSwag     "{activity}: {ctx}" + " {ending}" (llama.cpp's 6-line format)   acc_norm
// acc_norm divides each log-likelihood by the byte length of the choice text (lm-eval's
// "completion_len"; identical to characters for ASCII text).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tappa::eval {

struct McChoice {
  std::string context;
  std::string continuation;
  size_t norm_len = 1;  // length used by acc_norm
};

struct McItem {
  std::vector<McChoice> choices;
  int gold = 0;
};

enum class McTask { piqa, arc_easy, arc_challenge, winogrande, hellaswag };

std::string_view task_name(McTask t);   // "piqa", "arc_easy", "arc_challenge", "winogrande", "hellaswag"
McTask parse_task_name(std::string_view name);  // throws tappa::Error listing the valid names
// The metric the paper reports for the task: acc_norm, except WinoGrande (acc).
bool task_uses_acc_norm(McTask t);

// PIQA: valid.jsonl ({"goal","sol1","sol2"} per line) and valid-labels.lst (0/1 per line).
std::vector<McItem> parse_piqa(std::string_view jsonl, std::string_view labels);
// ARC (Easy or Challenge): {"question": {"stem", "choices": [{"text","label"}]}, "answerKey"}.
std::vector<McItem> parse_arc(std::string_view jsonl);
// WinoGrande, MosaicML's conversion: {"context_options": [a, b], "continuation", "gold"}.
std::vector<McItem> parse_winogrande(std::string_view jsonl);
// HellaSwag in llama.cpp's format: 6 lines per item (context, gold 0–3, four endings).
std::vector<McItem> parse_hellaswag(std::string_view text);

}  // namespace tappa::eval
