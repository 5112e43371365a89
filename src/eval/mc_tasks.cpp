#include "tappa/eval.h"

#include <nlohmann/json.hpp>

#include "io/text.h"  // quoted(): echoed input stays on one line (control bytes escaped)
#include "tappa/error.h"

namespace tappa::eval {

namespace {

// Lines without their terminators ("\n" or "\r\n"); a final empty line after the last "\n" is not a line.
std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    pos = nl + 1;
  }
  return lines;
}

bool blank(std::string_view s) { return s.find_first_not_of(" \t") == std::string_view::npos; }

std::string strip(std::string_view s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string_view::npos) return {};
  const size_t b = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(a, b - a + 1));
}

[[noreturn]] void fail(std::string_view task, size_t line, const std::string& why) {
  throw Error(std::string(task) + " line " + std::to_string(line) + ": " + why);
}

nlohmann::json parse_json_line(std::string_view task, size_t line_no, std::string_view line) {
  try {
    nlohmann::json j = nlohmann::json::parse(line);
    if (!j.is_object()) fail(task, line_no, "expected a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail(task, line_no, std::string("not valid JSON (") + e.what() + ")");
  }
}

std::string get_string(const nlohmann::json& j, const char* key, std::string_view task, size_t line_no) {
  if (!j.contains(key) || !j[key].is_string()) fail(task, line_no, std::string("missing string field \"") + key + "\"");
  return j[key].get<std::string>();
}

// " " + text, built by appending (GCC 12 warns falsely about operator+ on a literal here).
std::string with_space(std::string_view text) {
  std::string s;
  s.reserve(text.size() + 1);
  s += ' ';
  s += text;
  return s;
}

McChoice choice(std::string context, std::string_view text) {
  return McChoice{std::move(context), with_space(text), std::max<size_t>(text.size(), 1)};
}

}  // namespace

std::string_view task_name(McTask t) {
  switch (t) {
    case McTask::piqa: return "piqa";
    case McTask::arc_easy: return "arc_easy";
    case McTask::arc_challenge: return "arc_challenge";
    case McTask::winogrande: return "winogrande";
    case McTask::hellaswag: return "hellaswag";
  }
  return "?";
}

McTask parse_task_name(std::string_view name) {
  for (McTask t : {McTask::piqa, McTask::arc_easy, McTask::arc_challenge, McTask::winogrande, McTask::hellaswag})
    if (task_name(t) == name) return t;
  throw Error("unknown task '" + std::string(name) + "' (choose piqa, arc_easy, arc_challenge, winogrande, hellaswag)");
}

bool task_uses_acc_norm(McTask t) { return t != McTask::winogrande; }

std::vector<McItem> parse_piqa(std::string_view jsonl, std::string_view labels) {
  std::vector<McItem> items;
  const auto lines = split_lines(jsonl);
  const auto label_lines = split_lines(labels);
  size_t k = 0;  // label line cursor
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    const nlohmann::json j = parse_json_line("piqa", i + 1, lines[i]);
    const std::string goal = get_string(j, "goal", "piqa", i + 1);
    const std::string ctx = "Question: " + goal + "\nAnswer:";
    McItem item;
    item.choices.push_back(choice(ctx, get_string(j, "sol1", "piqa", i + 1)));
    item.choices.push_back(choice(ctx, get_string(j, "sol2", "piqa", i + 1)));
    while (k < label_lines.size() && blank(label_lines[k])) ++k;
    if (k >= label_lines.size()) fail("piqa", i + 1, "no label for this item (the label file is shorter)");
    const std::string lab = strip(label_lines[k]);
    if (lab != "0" && lab != "1") fail("piqa labels", k + 1, "label must be 0 or 1, got " + io::quoted(lab));
    item.gold = lab == "1";
    ++k;
    items.push_back(std::move(item));
  }
  while (k < label_lines.size() && blank(label_lines[k])) ++k;
  if (k != label_lines.size()) fail("piqa labels", k + 1, "more labels than items");
  return items;
}

std::vector<McItem> parse_arc(std::string_view jsonl) {
  std::vector<McItem> items;
  const auto lines = split_lines(jsonl);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    const nlohmann::json j = parse_json_line("arc", i + 1, lines[i]);
    if (!j.contains("question") || !j["question"].is_object()) fail("arc", i + 1, "missing object field \"question\"");
    const nlohmann::json& q = j["question"];
    const std::string ctx = "Question: " + get_string(q, "stem", "arc", i + 1) + "\nAnswer:";
    const std::string key = get_string(j, "answerKey", "arc", i + 1);
    if (!q.contains("choices") || !q["choices"].is_array() || q["choices"].size() < 2)
      fail("arc", i + 1, "\"choices\" must be an array of at least two choices");
    McItem item;
    item.gold = -1;
    for (const auto& c : q["choices"]) {
      if (!c.is_object()) fail("arc", i + 1, "a choice is not an object");
      if (get_string(c, "label", "arc", i + 1) == key) item.gold = static_cast<int>(item.choices.size());
      item.choices.push_back(choice(ctx, get_string(c, "text", "arc", i + 1)));
    }
    if (item.gold < 0) fail("arc", i + 1, "answerKey " + io::quoted(key) + " matches no choice label");
    items.push_back(std::move(item));
  }
  return items;
}

std::vector<McItem> parse_winogrande(std::string_view jsonl) {
  std::vector<McItem> items;
  const auto lines = split_lines(jsonl);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    const nlohmann::json j = parse_json_line("winogrande", i + 1, lines[i]);
    if (!j.contains("context_options") || !j["context_options"].is_array() || j["context_options"].size() != 2)
      fail("winogrande", i + 1, "\"context_options\" must be an array of two strings");
    // lm-eval's partial scoring: the target is the sentence after the blank, stripped, after a space.
    const std::string target = strip(get_string(j, "continuation", "winogrande", i + 1));
    McItem item;
    for (const auto& c : j["context_options"]) {
      if (!c.is_string()) fail("winogrande", i + 1, "\"context_options\" must hold strings");
      const std::string ctx = c.get<std::string>();
      item.choices.push_back(McChoice{ctx, with_space(target), std::max<size_t>(ctx.size(), 1)});
    }
    if (!j.contains("gold") || !j["gold"].is_number_integer() || (j["gold"] != 0 && j["gold"] != 1))
      fail("winogrande", i + 1, "\"gold\" must be 0 or 1");
    item.gold = j["gold"].get<int>();
    items.push_back(std::move(item));
  }
  return items;
}

std::vector<McItem> parse_hellaswag(std::string_view text) {
  std::vector<std::string_view> lines = split_lines(text);
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.size() % 6 != 0)
    throw Error("hellaswag: " + std::to_string(lines.size()) + " lines is not a multiple of 6 (context, label, 4 endings)");
  std::vector<McItem> items;
  for (size_t i = 0; i < lines.size(); i += 6) {
    const std::string lab = strip(lines[i + 1]);
    if (lab.size() != 1 || lab[0] < '0' || lab[0] > '3') fail("hellaswag", i + 2, "label must be 0..3, got " + io::quoted(lab));
    if (blank(lines[i])) fail("hellaswag", i + 1, "empty context");
    McItem item;
    item.gold = lab[0] - '0';
    for (int e = 0; e < 4; ++e) {
      if (blank(lines[i + 2 + e])) fail("hellaswag", i + 3 + e, "empty ending");
      item.choices.push_back(choice(std::string(lines[i]), lines[i + 2 + e]));
    }
    items.push_back(std::move(item));
  }
  return items;
}

}  // namespace tappa::eval
