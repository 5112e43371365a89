#include "evalkv/longbench.h"

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "evalkv/metrics.h"
#include "tappa/error.h"

namespace tappa::evalkv {
namespace {

std::string string_field(const nlohmann::json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw Error(std::string("missing field \"") + key + "\"");
    return "";
  }
  if (!it->is_string()) throw Error(std::string("field \"") + key + "\" is not a string");
  return it->get<std::string>();
}

std::vector<std::string> string_list(const nlohmann::json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw Error(std::string("missing field \"") + key + "\"");
    return {};
  }
  if (!it->is_array()) throw Error(std::string("field \"") + key + "\" is not a list");
  std::vector<std::string> out;
  for (const auto& e : *it) {
    if (!e.is_string()) throw Error(std::string("field \"") + key + "\" holds a non-string element");
    out.push_back(e.get<std::string>());
  }
  return out;
}

struct Template {
  std::string before;  // text before {context}
  std::string after;   // text after {context}; "{input}" is replaced by the question
  int max_new = 64;
};

// Our transcription of LongBench's English prompts (config/dataset2prompt.json) and generation
// lengths (dataset2maxlen.json).
const std::map<std::string, Template, std::less<>>& templates() {
  static const std::map<std::string, Template, std::less<>> t = {
      {"multi_news",
       {"You are given several news passages. Write a one-page summary of all news. \n\nNews:\n",
        "\n\nNow, write a one-page summary of all the news.\n\nSummary:", 512}},
      {"gov_report",
       {"You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n",
        "\n\nNow, write a one-page summary of the report.\n\nSummary:", 512}},
      {"qasper",
       {"You are given a scientific article and a question. Answer the question as concisely as you can, using a "
        "single phrase or sentence if possible. If the question cannot be answered based on the information in the "
        "article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or "
        "\"unanswerable\". Do not provide any explanation.\n\nArticle: ",
        "\n\n Answer the question based on the above article as concisely as you can, using a single phrase or "
        "sentence if possible. If the question cannot be answered based on the information in the article, write "
        "\"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not "
        "provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
        128}},
      {"hotpotqa",
       {"Answer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nThe following are given passages.\n",
        "\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nQuestion: {input}\nAnswer:",
        32}},
      {"2wikimqa",
       {"Answer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nThe following are given passages.\n",
        "\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nQuestion: {input}\nAnswer:",
        32}},
      {"musique",
       {"Answer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nThe following are given passages.\n",
        "\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nQuestion: {input}\nAnswer:",
        32}},
      {"triviaqa",
       {"Answer the question based on the given passage. Only give me the answer and do not output any other words. "
        "The following are some examples.\n\n",
        "\n\n{input}", 32}},
      {"trec",
       {"Please determine the type of the question below. Here are some examples of questions.\n\n", "\n{input}", 64}},
      {"samsum",
       {"Summarize the dialogue into a few short sentences. The following are some examples.\n\n", "\n\n{input}", 128}},
      {"passage_count",
       {"There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully "
        "read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In "
        "other words, how many non-repeating paragraphs are there in total?\n\n",
        "\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should "
        "only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",
        32}},
      {"passage_retrieval_en",
       {"Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
        "abstract is from.\n\n",
        "\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract "
        "is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ",
        32}},
      {"lcc", {"Please complete the code given below. \n", "Next line of code:\n", 64}},
      {"repobench-p", {"Please complete the code given below. \n", "{input}Next line of code:\n", 64}},
  };
  return t;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
}

}  // namespace

bool longbench_uses_chat_template(std::string_view dataset) {
  for (std::string_view raw : {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
    if (dataset == raw) return false;
  return true;
}

LongBenchRecord parse_longbench_line(std::string_view line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    if (what.size() > 160) what.resize(160);
    throw Error("not a JSON object (" + what + ")");
  }
  if (!j.is_object()) throw Error("a LongBench line must be a JSON object");
  LongBenchRecord r;
  r.input = string_field(j, "input", false);
  r.context = string_field(j, "context", true);
  r.answers = string_list(j, "answers", true);
  if (r.answers.empty()) throw Error("field \"answers\" is empty");
  r.all_classes = string_list(j, "all_classes", false);
  r.dataset = string_field(j, "dataset", false);
  r.language = string_field(j, "language", false);
  r.id = string_field(j, "_id", false);
  if (auto it = j.find("length"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > (1 << 30))
      throw Error("field \"length\" is not a non-negative integer");
    r.length = static_cast<int>(it->get<int64_t>());
  }
  return r;
}

std::vector<LongBenchRecord> read_longbench_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read");
  std::vector<LongBenchRecord> out;
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    try {
      out.push_back(parse_longbench_line(line));
    } catch (const Error& e) {
      throw Error(path + ":" + std::to_string(n) + ": " + e.what());
    }
  }
  if (out.empty()) throw Error(path + ": no records");
  return out;
}

TaskSample longbench_sample(const LongBenchRecord& rec, const std::string& task, int index, int max_prompt_tokens,
                            int max_new_cap, const TokenCounter& count,
                            const std::function<std::string(std::string_view, int, int)>& cut_tokens) {
  std::string dataset = rec.dataset;
  if (dataset.empty()) dataset = task.rfind("longbench_", 0) == 0 ? task.substr(10) : task;
  std::string ds = dataset;
  if (ds.size() > 2 && ds.substr(ds.size() - 2) == "_e") ds.resize(ds.size() - 2);
  Template t{"", "\n\nQuestion: {input}\nAnswer:", 64};
  if (auto it = templates().find(ds); it != templates().end()) t = it->second;
  TaskSample s;
  s.task = task;
  s.length = max_prompt_tokens;
  s.index = index;
  s.metric = longbench_metric(ds);
  s.outputs = rec.answers;
  s.all_classes = rec.all_classes;
  s.max_new_tokens = std::min(t.max_new, max_new_cap);
  s.dataset = ds;
  s.chat_template = longbench_uses_chat_template(ds);
  s.stop_at_newline = ds == "samsum";
  std::string after = t.after;
  replace_all(after, "{input}", rec.input);
  s.question = after;
  // Middle truncation of the whole prompt (LongBench: keep the first and last max_length/2 tokens);
  // here the cut falls inside the context so the instruction and the question stay whole.
  const int budget = max_prompt_tokens - s.max_new_tokens - count(t.before) - count(after);
  if (budget < 16) throw Error(task + ": length " + std::to_string(max_prompt_tokens) + " is too small");
  std::string ctx = rec.context;
  const int n = count(ctx);
  if (n > budget) ctx = cut_tokens(ctx, budget / 2, n - (budget - budget / 2));
  s.context = t.before + ctx;
  return s;
}

}  // namespace tappa::evalkv
