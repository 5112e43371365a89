#include "evalkv/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <unordered_map>

#include "tappa/error.h"

namespace tappa::evalkv {
namespace {

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// RULER's postprocess_pred: control characters become newlines, then strip.
std::string ruler_clean(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  const auto b = out.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return "";
  const auto e = out.find_last_not_of(" \t\n\r\f\v");
  return out.substr(b, e - b + 1);
}

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's str.split() (runs of whitespace, no empty pieces); ASCII whitespace only.
std::vector<std::string> split_ws(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !is_space(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Python's str.split(sep) with an explicit separator (keeps empty pieces).
std::vector<std::string> split_on(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    const size_t e = s.find(sep, b);
    out.emplace_back(s.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b));
    if (e == std::string_view::npos) break;
    b = e + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

// Python regex \w for the ASCII range, and every non-ASCII byte (letters of other scripts).
bool is_word(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

// All runs of ASCII digits (re.findall(r"\d+")).
std::vector<std::string> find_numbers(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      out.emplace_back(s.substr(i, j - i));
      i = j;
    } else {
      ++i;
    }
  }
  return out;
}

// Python's round() (half to even), as fuzzywuzzy's intr() uses it.
int round_half_even(double x) {
  const double r = std::nearbyint(x);  // default rounding mode: to nearest, ties to even
  return static_cast<int>(r);
}

// UTF-8 to code points (Python compares characters, not bytes); invalid bytes stand for themselves.
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) {
      out.push_back(0x110000u + c);
      ++i;
      continue;
    }
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) ok = false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (!ok) {
      out.push_back(0x110000u + c);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

template <class T>
size_t lcs_length(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The `rouge` package's _recon_lcs: the words of one LCS of x (reference) and y (hypothesis), traced
// back from the end with its tie rule (up only when strictly better, else left), as a set.
std::set<std::string> recon_lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y) {
  const size_t n = x.size(), m = y.size();
  std::vector<uint32_t> t((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint32_t& { return t[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
  std::set<std::string> words;
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      words.insert(x[i - 1]);
      --i;
      --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
  return words;
}

// The `rouge` package's sentence split: '.'-separated pieces that are non-empty before their
// whitespace is collapsed.
std::vector<std::string> rouge_sentences(std::string_view text) {
  std::vector<std::string> out;
  for (const std::string& piece : split_on(text, '.'))
    if (!piece.empty()) out.push_back(join(split_ws(piece), " "));
  return out;
}

// _split_into_words: each sentence split on single spaces (Python split(" ") keeps empty pieces).
std::vector<std::string> sentence_words(const std::string& sentence) { return split_on(sentence, ' '); }

}  // namespace

double string_match_all(std::string_view prediction, const std::vector<std::string>& refs) {
  if (refs.empty()) return 0.0;
  const std::string pred = ascii_lower(ruler_clean(prediction));
  double hit = 0;
  for (const auto& r : refs) hit += pred.find(ascii_lower(r)) != std::string::npos ? 1.0 : 0.0;
  return hit / static_cast<double>(refs.size());
}

double string_match_part(std::string_view prediction, const std::vector<std::string>& refs) {
  const std::string pred = ascii_lower(ruler_clean(prediction));
  for (const auto& r : refs)
    if (pred.find(ascii_lower(r)) != std::string::npos) return 1.0;
  return 0.0;
}

std::string normalize_answer(std::string_view s) {
  static const std::string_view punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  std::string t;
  for (char c : ascii_lower(s))
    if (punct.find(c) == std::string_view::npos) t.push_back(c);
  // \b(a|an|the)\b → " "
  std::string u;
  for (size_t i = 0; i < t.size();) {
    const bool start_ok = i == 0 || !is_word(static_cast<unsigned char>(t[i - 1]));
    size_t len = 0;
    if (start_ok) {
      for (std::string_view art : {"the", "an", "a"}) {
        if (t.compare(i, art.size(), art) == 0 &&
            (i + art.size() == t.size() || !is_word(static_cast<unsigned char>(t[i + art.size()])))) {
          len = art.size();
          break;
        }
      }
    }
    if (len) {
      u.push_back(' ');
      i += len;
    } else {
      u.push_back(t[i++]);
    }
  }
  return join(split_ws(u), " ");
}

double qa_f1_score(std::string_view prediction, std::string_view ground_truth) {
  const auto p = split_ws(normalize_answer(prediction));
  const auto g = split_ws(normalize_answer(ground_truth));
  std::unordered_map<std::string, int> cg;
  for (const auto& w : g) ++cg[w];
  int same = 0;
  for (const auto& w : p) {
    auto it = cg.find(w);
    if (it != cg.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / p.size();
  const double recall = static_cast<double>(same) / g.size();
  return 2 * precision * recall / (precision + recall);
}

double rouge_l_score(std::string_view prediction, std::string_view ground_truth) {
  // LongBench wraps Rouge().get_scores in try/except → 0.0. The package raises on an empty
  // hypothesis or reference (its own check, and "Collections must contain at least 1 sentence").
  if (prediction.empty() || ground_truth.empty()) return 0.0;
  const auto hyp = rouge_sentences(prediction);
  const auto ref = rouge_sentences(ground_truth);
  if (hyp.empty() || ref.empty()) return 0.0;
  std::set<std::string> ref_words, hyp_words;  // exclusive n-grams: distinct words
  for (const auto& s : ref)
    for (auto& w : sentence_words(s)) ref_words.insert(w);
  for (const auto& s : hyp)
    for (auto& w : sentence_words(s)) hyp_words.insert(w);
  std::set<std::string> uni;
  for (const auto& r : ref) {
    const auto rw = sentence_words(r);
    for (const auto& h : hyp) {
      const auto lcs = recon_lcs_words(rw, sentence_words(h));
      uni.insert(lcs.begin(), lcs.end());
    }
  }
  const double llcs = static_cast<double>(uni.size());
  const double r_lcs = llcs / ref_words.size();
  const double p_lcs = llcs / hyp_words.size();
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes) {
  std::vector<std::string> matched;
  for (const auto& c : all_classes)
    if (prediction.find(c) != std::string_view::npos) matched.push_back(c);
  // LongBench removes from the list while iterating over it, which skips the element after each
  // removal; reproduced on purpose so the scores agree.
  for (size_t i = 0; i < matched.size(); ++i) {
    if (ground_truth.find(matched[i]) != std::string_view::npos && matched[i] != ground_truth)
      matched.erase(matched.begin() + static_cast<std::ptrdiff_t>(i));
  }
  if (std::find(matched.begin(), matched.end(), ground_truth) != matched.end()) return 1.0 / matched.size();
  return 0.0;
}

double retrieval_score(std::string_view prediction, std::string_view ground_truth) {
  const std::string_view tag = "Paragraph ";
  std::string id;
  for (size_t p = ground_truth.find(tag); p != std::string_view::npos; p = ground_truth.find(tag, p + 1)) {
    size_t j = p + tag.size();
    while (j < ground_truth.size() && std::isdigit(static_cast<unsigned char>(ground_truth[j]))) ++j;
    if (j > p + tag.size()) {
      id = std::string(ground_truth.substr(p + tag.size(), j - p - tag.size()));
      break;
    }
  }
  if (id.empty()) throw Error("retrieval score: the answer '" + std::string(ground_truth) + "' has no 'Paragraph N'");
  const auto nums = find_numbers(prediction);
  if (nums.empty()) return 0.0;
  return static_cast<double>(std::count(nums.begin(), nums.end(), id)) / nums.size();
}

double count_score(std::string_view prediction, std::string_view ground_truth) {
  const auto nums = find_numbers(prediction);
  if (nums.empty()) return 0.0;
  return static_cast<double>(std::count(nums.begin(), nums.end(), std::string(ground_truth))) / nums.size();
}

int fuzz_ratio(std::string_view a, std::string_view b) {
  if (a == b) return 100;  // fuzzywuzzy checks equality before emptiness
  if (a.empty() || b.empty()) return 0;
  const auto x = code_points(a), y = code_points(b);
  const double total = static_cast<double>(x.size() + y.size());
  const double lcs = static_cast<double>(lcs_length(x, y));
  // Indel similarity (1 − (|x| + |y| − 2·LCS) / (|x| + |y|)) = 2·LCS / (|x| + |y|).
  return round_half_even(100.0 * (2.0 * lcs / total));
}

double code_sim_score(std::string_view prediction, std::string_view ground_truth) {
  size_t b = 0;
  while (b < prediction.size() && prediction[b] == '\n') ++b;
  std::string line;
  for (const std::string& l : split_on(prediction.substr(b), '\n')) {
    if (l.find('`') == std::string::npos && l.find('#') == std::string::npos && l.find("//") == std::string::npos) {
      line = l;
      break;
    }
  }
  return fuzz_ratio(line, ground_truth) / 100.0;
}

std::string longbench_metric(std::string_view dataset_in) {
  std::string_view dataset = dataset_in;
  if (dataset.size() > 2 && dataset.substr(dataset.size() - 2) == "_e") dataset.remove_suffix(2);
  static const std::map<std::string, std::string, std::less<>> m = {
      {"narrativeqa", "qa_f1"},      {"qasper", "qa_f1"},         {"multifieldqa_en", "qa_f1"},
      {"hotpotqa", "qa_f1"},         {"2wikimqa", "qa_f1"},       {"musique", "qa_f1"},
      {"triviaqa", "qa_f1"},         {"gov_report", "rouge"},     {"qmsum", "rouge"},
      {"multi_news", "rouge"},       {"samsum", "rouge"},         {"trec", "classification"},
      {"lsht", "classification"},    {"passage_retrieval_en", "retrieval"}, {"passage_count", "count"},
      {"lcc", "code_sim"},           {"repobench-p", "code_sim"}};
  auto it = m.find(dataset);
  if (it != m.end()) return it->second;
  if (dataset == "multifieldqa_zh" || dataset == "dureader" || dataset == "vcsum" || dataset == "passage_retrieval_zh")
    throw Error("LongBench data set '" + std::string(dataset_in) +
                "' needs the Chinese metrics (jieba word segmentation), which tappa does not implement");
  throw Error("unknown LongBench data set '" + std::string(dataset_in) + "' (no metric known for it)");
}

double score_prediction(std::string_view metric, std::string_view dataset, std::string_view prediction,
                        const std::vector<std::string>& answers, const std::vector<std::string>& all_classes) {
  if (metric == "string_match_all") return string_match_all(prediction, answers);
  if (metric == "string_match_part") return string_match_part(prediction, answers);
  std::string pred(prediction);
  std::string_view ds = dataset;
  if (ds.size() > 2 && ds.substr(ds.size() - 2) == "_e") ds.remove_suffix(2);
  if (ds == "trec" || ds == "triviaqa" || ds == "samsum" || ds == "lsht") {
    size_t b = 0;
    while (b < pred.size() && pred[b] == '\n') ++b;
    pred = split_on(std::string_view(pred).substr(b), '\n').front();
  }
  double best = 0.0;
  for (const auto& a : answers) {
    double s;
    if (metric == "qa_f1") s = qa_f1_score(pred, a);
    else if (metric == "rouge") s = rouge_l_score(pred, a);
    else if (metric == "classification") s = classification_score(pred, a, all_classes);
    else if (metric == "retrieval") s = retrieval_score(pred, a);
    else if (metric == "count") s = count_score(pred, a);
    else if (metric == "code_sim") s = code_sim_score(pred, a);
    else throw Error("unknown metric '" + std::string(metric) + "'");
    best = std::max(best, s);
  }
  return best;
}

}  // namespace tappa::evalkv
