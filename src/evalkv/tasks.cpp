// Task generators. The prompt wording is our own; the task designs follow RULER (needle retrieval in
// four variants, variable tracking, common-words extraction; Hsieh et al. 2024) and the passkey test
// (Mohtashami & Jaggi 2023). Sizes are fitted to the target length with the model's own tokenizer by
// a binary search over the amount of filler, as RULER does.
#include "evalkv/tasks.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "evalkv/rng.h"
#include "tappa/error.h"

namespace tappa::evalkv {
namespace {

// Key words for the needles (adjective-noun keys, noun values). Our own list of common words.
constexpr std::array<std::string_view, 48> kAdjectives = {
    "ancient", "bitter",  "brave",   "bright", "calm",    "clever", "cold",   "crooked", "curious", "dark",
    "eager",   "early",   "fancy",   "fierce", "gentle",  "giant",  "golden", "green",   "hollow",  "honest",
    "humble",  "icy",     "jolly",   "kind",   "lazy",    "little", "lively", "loud",    "lucky",   "mighty",
    "narrow",  "noisy",   "odd",     "pale",   "proud",   "quick",  "quiet",  "rapid",   "rough",   "rusty",
    "silent",  "silver",  "sleepy",  "smooth", "sturdy",  "tender", "wild",   "wooden"};
constexpr std::array<std::string_view, 64> kNouns = {
    "anchor",  "apple",   "arrow",   "badger",  "basket",  "beacon",  "bridge",  "candle",  "canyon", "castle",
    "cedar",   "cloud",   "comet",   "copper",  "crystal", "desert",  "dragon",  "engine",  "falcon", "feather",
    "forest",  "fountain", "garden", "glacier", "hammer",  "harbor",  "helmet",  "island",  "jacket", "kettle",
    "lantern", "meadow",  "mirror",  "mountain", "needle", "orchard", "otter",   "palace",  "pebble", "pepper",
    "piano",   "pillow",  "planet",  "pocket",  "rabbit",  "ribbon",  "saddle",  "scissors", "shadow", "signal",
    "spider",  "statue",  "teapot",  "thunder", "tiger",   "tractor", "trumpet", "tunnel",  "violin", "wagon",
    "walnut",  "whistle", "window",  "zebra"};

std::string read_whole(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw Error(p.string() + ": cannot read (is the data folder right? --data-dir)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string normalize_ws(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool space = false;
  for (unsigned char c : s) {
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(static_cast<char>(c));
  }
  return out;
}

std::vector<size_t> word_starts(const std::string& text) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] != ' ' && (i == 0 || text[i - 1] == ' ')) starts.push_back(i);
  return starts;
}

std::vector<std::string> distinct_words(const std::string& text) {
  std::set<std::string> words;
  std::string cur;
  for (unsigned char c : text) {
    if (std::isalpha(c) && c < 128) {
      cur.push_back(static_cast<char>(std::tolower(c)));
    } else {
      if (cur.size() >= 3 && cur.size() <= 10) words.insert(cur);
      cur.clear();
    }
  }
  if (cur.size() >= 3 && cur.size() <= 10) words.insert(cur);
  return {words.begin(), words.end()};
}

// `n` words of the essay haystack starting at word `start`, cyclically.
std::string essay_words(const std::string& text, const std::vector<size_t>& starts, size_t start, size_t n) {
  std::string out;
  if (starts.empty()) return out;
  out.reserve(n * 6);
  for (size_t i = 0; i < n; ++i) {
    const size_t w = (start + i) % starts.size();
    const size_t b = starts[w];
    size_t e = text.find(' ', b);
    if (e == std::string::npos) e = text.size();
    if (!out.empty()) out.push_back(' ');
    out.append(text, b, e - b);
  }
  return out;
}

// Inserts `needles` (each with its depth in [0,1]) at the sentence boundary at or after that fraction of
// the text, so a needle never splits a sentence. Ties keep the given order.
std::string insert_needles(const std::string& text, std::vector<std::pair<double, std::string>> needles) {
  std::vector<std::pair<size_t, size_t>> at;  // (offset, needle index)
  for (size_t i = 0; i < needles.size(); ++i) {
    size_t pos = static_cast<size_t>(needles[i].first * static_cast<double>(text.size()));
    if (pos >= text.size() || needles[i].first >= 1.0) {
      pos = text.size();
    } else if (pos > 0) {
      const size_t b = text.find(". ", pos > 0 ? pos - 1 : 0);
      pos = b == std::string::npos ? text.size() : b + 2;
    }
    at.emplace_back(pos, i);
  }
  std::stable_sort(at.begin(), at.end());
  std::string out;
  out.reserve(text.size() + 256);
  size_t prev = 0;
  for (auto [pos, i] : at) {
    out.append(text, prev, pos - prev);
    if (!out.empty() && out.back() != ' ') out.push_back(' ');
    out += needles[i].second;
    out.push_back(' ');
    prev = pos;
  }
  out.append(text, prev, std::string::npos);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string number_value(Rng& r) { return std::to_string(r.range(1000000, 9999999)); }

std::string uuid_value(Rng& r) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) s.push_back('-');
    int d = static_cast<int>(r.below(16));
    if (i == 12) d = 4;                // version 4
    if (i == 16) d = 8 + (d & 3);      // variant 10xx
    s.push_back(hex[d]);
  }
  return s;
}

std::string word_value(Rng& r) { return std::string(kNouns[r.below(kNouns.size())]); }

std::string key_value(Rng& r) {
  return std::string(kAdjectives[r.below(kAdjectives.size())]) + "-" + std::string(kNouns[r.below(kNouns.size())]);
}

// Distinct draws from `draw`.
template <class F>
std::vector<std::string> distinct(Rng& r, size_t n, F draw) {
  std::vector<std::string> out;
  for (int guard = 0; out.size() < n && guard < 100000; ++guard) {
    std::string v = draw(r);
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(std::move(v));
  }
  if (out.size() < n) throw Error("task generator: could not draw enough distinct values");
  return out;
}

// Largest n in [0, hi] for which fits(n) holds (fits is monotone: true then false). Throws when even
// n = lo_needed does not fit.
template <class F>
size_t largest_fitting(size_t hi, F fits) {
  size_t lo = 0;
  if (!fits(0)) return SIZE_MAX;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

const std::string kNoise = "The river is wide. The hills are green. The road goes on. Here we are. Back and forth again. ";

struct NiahSpec {
  std::string value_kind;  // words, numbers, uuids
  int n_keys = 1;          // needles with distinct keys
  int n_values = 1;        // values per key (multi-value)
  int n_queries = 1;       // keys asked for
};

NiahSpec niah_spec(const std::string& task) {
  if (task == "niah_single_words") return {"words", 1, 1, 1};
  if (task == "niah_single_numbers") return {"numbers", 1, 1, 1};
  if (task == "niah_single_uuids") return {"uuids", 1, 1, 1};
  if (task == "niah_multikey") return {"numbers", 4, 1, 1};
  if (task == "niah_multivalue") return {"numbers", 1, 4, 1};
  if (task == "niah_multiquery") return {"numbers", 4, 1, 4};
  throw Error("unknown needle task " + task);
}

std::string join_list(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += (i + 1 == v.size()) ? (v.size() > 2 ? ", and " : " and ") : ", ";
    s += v[i];
  }
  return s;
}

}  // namespace

Haystacks Haystacks::load(const std::string& data_dir) {
  namespace fs = std::filesystem;
  Haystacks h;
  const fs::path root(data_dir);
  {
    const fs::path p = root / "ruler" / "PaulGrahamEssays.json";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_whole(p));
    } catch (const nlohmann::json::exception& e) {
      throw Error(p.string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw Error(p.string() + ": expected an object with a string field \"text\"");
    h.essays = normalize_ws(j["text"].get<std::string>());
  }
  {
    const fs::path dir = root / "niah_paulgraham_essays";
    std::vector<fs::path> files;
    if (fs::is_directory(dir))
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".txt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::string all;
    for (const auto& f : files) all += read_whole(f) + "\n";
    h.niah = normalize_ws(all);
  }
  h.wikitext = read_whole(root / "wikitext2" / "wiki.test.reconstructed.raw");
  h.vocabulary = distinct_words(h.essays);
  if (h.essays.size() < 10000 || h.vocabulary.size() < 1000)
    throw Error((root / "ruler" / "PaulGrahamEssays.json").string() + ": haystack too small");
  return h;
}

Haystacks Haystacks::from_text(std::string text) {
  Haystacks h;
  h.essays = normalize_ws(text);
  h.niah = h.essays;
  h.wikitext = text;
  h.vocabulary = distinct_words(h.essays);
  return h;
}

const std::vector<std::string>& ruler_task_names() {
  static const std::vector<std::string> names = {
      "niah_single_words", "niah_single_numbers", "niah_single_uuids", "niah_multikey", "niah_multivalue",
      "niah_multiquery",   "vt",                  "cwe",               "passkey"};
  return names;
}

bool is_ruler_task(std::string_view name) {
  const auto& n = ruler_task_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

bool is_fidelity_task(std::string_view name) { return name == "fidelity_wikitext" || name == "fidelity_essays"; }

double sweep_depth(int index, int n) {
  if (n <= 1) return 0.5;
  const int i = ((index % n) + n) % n;
  return static_cast<double>(i) / (n - 1);
}

namespace {

// Depth sweep period: samples cycle through these many depths (0, 0.25, …, 1).
constexpr int kDepthSteps = 5;

TaskSample fit_niah(const Haystacks& hay, const std::string& task, int length, int index, uint64_t seed,
                    const TokenCounter& count) {
  static thread_local const std::string* cached_text = nullptr;
  static thread_local std::vector<size_t> starts;
  if (cached_text != &hay.essays) {
    starts = word_starts(hay.essays);
    cached_text = &hay.essays;
  }
  const NiahSpec spec = niah_spec(task);
  Rng r(mix_seed(seed, task, static_cast<uint64_t>(length), static_cast<uint64_t>(index)));
  const std::string singular = spec.value_kind == "words" ? "word" : spec.value_kind == "numbers" ? "number" : "uuid";
  const std::string plural = singular + "s";
  auto draw = [&](Rng& g) {
    return spec.value_kind == "words" ? word_value(g) : spec.value_kind == "numbers" ? number_value(g) : uuid_value(g);
  };
  const std::vector<std::string> keys = distinct(r, spec.n_keys, key_value);
  const std::vector<std::string> all = distinct(r, static_cast<size_t>(spec.n_keys) * spec.n_values, draw);
  std::vector<std::pair<double, std::string>> needles;
  for (int k = 0; k < spec.n_keys; ++k)
    for (int v = 0; v < spec.n_values; ++v)
      needles.emplace_back(r.unit(), "One of the special magic " + plural + " for " + keys[k] + " is: " +
                                         all[static_cast<size_t>(k) * spec.n_values + v] + ".");
  TaskSample s;
  s.task = task;
  s.length = length;
  s.index = index;
  s.metric = "string_match_all";
  if (needles.size() == 1) {
    s.depth = sweep_depth(index, kDepthSteps);
    needles[0].first = s.depth;
  }
  std::vector<std::string> qkeys(keys.begin(), keys.begin() + spec.n_queries);
  for (int k = 0; k < spec.n_queries; ++k)
    for (int v = 0; v < spec.n_values; ++v) s.outputs.push_back(all[static_cast<size_t>(k) * spec.n_values + v]);
  const bool many = s.outputs.size() > 1;
  s.max_new_tokens = spec.value_kind == "uuids" ? 40 : many ? 48 : 16;
  const std::string header = "Some special magic " + plural +
                             " are hidden in the text below. Read it carefully and remember them: you will be asked "
                             "for them afterwards.\n";
  s.question = "\nWhat " +
               std::string(many ? "are all the special magic " + plural : "is the special magic " + singular) +
               " for " + join_list(qkeys) + " mentioned in the text above?";
  s.answer_prefix = " The special magic " + (many ? plural : singular) + " for " + join_list(qkeys) +
                    " mentioned in the text above " + (many ? "are" : "is");
  const size_t start = starts.empty() ? 0 : r.below(starts.size());
  auto build = [&](size_t n_words) {
    return header + insert_needles(essay_words(hay.essays, starts, start, n_words), needles);
  };
  const int tail = count(s.question + s.answer_prefix) + s.max_new_tokens;
  const size_t n = largest_fitting(static_cast<size_t>(length) * 2, [&](size_t nw) {
    return count(build(nw)) + tail <= length;
  });
  if (n == SIZE_MAX || n == 0) throw Error(task + ": length " + std::to_string(length) + " is too small for the task");
  s.context = build(n);
  return s;
}

TaskSample make_passkey(const std::string& task, int length, int index, uint64_t seed, const TokenCounter& count) {
  Rng r(mix_seed(seed, task, static_cast<uint64_t>(length), static_cast<uint64_t>(index)));
  const std::string key = std::to_string(r.range(10000, 99999));
  TaskSample s;
  s.task = task;
  s.length = length;
  s.index = index;
  s.metric = "string_match_all";
  s.outputs = {key};
  s.max_new_tokens = 12;
  s.depth = sweep_depth(index, kDepthSteps);
  const std::string header = "A pass key is hidden somewhere in the filler text below. Find it and remember it; you "
                             "will be asked for it at the end.\n";
  const std::string line = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  s.question = "\nWhat is the pass key?";
  s.answer_prefix = " The pass key is";
  auto build = [&](size_t units) {
    std::string filler;
    for (size_t i = 0; i < units; ++i) filler += kNoise;
    while (!filler.empty() && filler.back() == ' ') filler.pop_back();
    return header + insert_needles(filler, {{s.depth, line}});
  };
  const int tail = count(s.question + s.answer_prefix) + s.max_new_tokens;
  const size_t n = largest_fitting(static_cast<size_t>(length), [&](size_t u) { return count(build(u)) + tail <= length; });
  if (n == SIZE_MAX || n == 0) throw Error(task + ": length " + std::to_string(length) + " is too small for the task");
  s.context = build(n);
  return s;
}

std::string var_name(Rng& r) {
  std::string v;
  for (int i = 0; i < 5; ++i) v.push_back(static_cast<char>('A' + r.below(26)));
  return v;
}

TaskSample make_vt(const std::string& task, int length, int index, uint64_t seed, const TokenCounter& count) {
  Rng r(mix_seed(seed, task, static_cast<uint64_t>(length), static_cast<uint64_t>(index)));
  constexpr int kHops = 4;  // one chain of 5 variables (RULER's default: 1 chain, 4 hops)
  const std::vector<std::string> vars = distinct(r, kHops + 1, var_name);
  const std::string value = std::to_string(r.range(10000, 99999));
  std::vector<std::pair<double, std::string>> stmts;
  std::vector<double> depths;
  for (int i = 0; i <= kHops; ++i) depths.push_back(r.unit());
  std::sort(depths.begin(), depths.end());  // the chain reads in order
  stmts.emplace_back(depths[0], "VAR " + vars[0] + " = " + value + ".");
  for (int i = 1; i <= kHops; ++i) stmts.emplace_back(depths[i], "VAR " + vars[i] + " = VAR " + vars[i - 1] + ".");
  TaskSample s;
  s.task = task;
  s.length = length;
  s.index = index;
  s.metric = "string_match_all";
  s.outputs = vars;
  s.max_new_tokens = 30;
  const std::string header = "Memorize every variable assignment in the text below; you will be asked to follow them.\n";
  s.question = "\nQuestion: which variables are assigned the value " + value +
               " in the text above, directly or through other variables?";
  s.answer_prefix = " Answer: following the chain of assignments in the text above, " + std::to_string(kHops + 1) +
                    " variables have the value " + value + ". They are:";
  auto build = [&](size_t units) {
    std::string filler;
    for (size_t i = 0; i < units; ++i) filler += kNoise;
    while (!filler.empty() && filler.back() == ' ') filler.pop_back();
    return header + insert_needles(filler, stmts);
  };
  const int tail = count(s.question + s.answer_prefix) + s.max_new_tokens;
  const size_t n = largest_fitting(static_cast<size_t>(length), [&](size_t u) { return count(build(u)) + tail <= length; });
  if (n == SIZE_MAX || n == 0) throw Error(task + ": length " + std::to_string(length) + " is too small for the task");
  s.context = build(n);
  return s;
}

TaskSample make_cwe(const Haystacks& hay, const std::string& task, int length, int index, uint64_t seed,
                    const TokenCounter& count) {
  if (hay.vocabulary.size() < 100) throw Error(task + ": the haystack vocabulary is too small");
  Rng r(mix_seed(seed, task, static_cast<uint64_t>(length), static_cast<uint64_t>(index)));
  constexpr int kCommon = 10, kRareFreq = 3;
  // RULER uses 30 copies of each common word; short prompts cannot hold 300 entries, so the count
  // scales with the length (≥ 2× the rare words' frequency keeps the answer unambiguous).
  const int common_freq = std::clamp(length / 160, 6, 30);
  std::vector<std::string> pool = hay.vocabulary;
  r.shuffle(pool);
  const std::vector<std::string> common(pool.begin(), pool.begin() + kCommon);
  TaskSample s;
  s.task = task;
  s.length = length;
  s.index = index;
  s.metric = "string_match_all";
  s.outputs = common;
  s.max_new_tokens = 64;
  const std::string header = "Below is a numbered list of words. Some words occur far more often than the others; "
                             "remember which.\n";
  s.question = "\nQuestion: what are the 10 most frequent words in the list above?";
  s.answer_prefix = " Answer: the 10 words that occur most often in the list are:";
  const uint64_t order_seed = r.next();
  auto build = [&](size_t n_rare) {
    n_rare = std::min(n_rare, pool.size() - kCommon);
    std::vector<std::string> list;
    for (const auto& w : common)
      for (int i = 0; i < common_freq; ++i) list.push_back(w);
    for (size_t k = 0; k < n_rare; ++k)
      for (int i = 0; i < kRareFreq; ++i) list.push_back(pool[kCommon + k]);
    Rng order(order_seed);
    order.shuffle(list);
    std::string text = header;
    for (size_t i = 0; i < list.size(); ++i) text += std::to_string(i + 1) + ". " + list[i] + " ";
    text.pop_back();
    return text;
  };
  const int tail = count(s.question + s.answer_prefix) + s.max_new_tokens;
  const size_t n = largest_fitting(std::min<size_t>(length, pool.size() - kCommon),
                                   [&](size_t k) { return count(build(k)) + tail <= length; });
  if (n == SIZE_MAX) throw Error(task + ": length " + std::to_string(length) + " is too small for the task");
  s.context = build(n);
  return s;
}

}  // namespace

TaskSample generate_task(const Haystacks& hay, const std::string& task, int length, int index, uint64_t seed,
                         const TokenCounter& count) {
  if (length < 64) throw Error(task + ": length " + std::to_string(length) + " is too small (minimum 64 tokens)");
  if (task.rfind("niah_", 0) == 0) return fit_niah(hay, task, length, index, seed, count);
  if (task == "passkey") return make_passkey(task, length, index, seed, count);
  if (task == "vt") return make_vt(task, length, index, seed, count);
  if (task == "cwe") return make_cwe(hay, task, length, index, seed, count);
  throw Error("unknown task '" + task + "'");
}

std::string fidelity_text(const Haystacks& hay, const std::string& task, int length, int index, uint64_t seed) {
  const std::string& src = task == "fidelity_wikitext" ? hay.wikitext : task == "fidelity_essays" ? hay.niah : hay.essays;
  if (src.empty()) throw Error(task + ": source text is empty");
  Rng r(mix_seed(seed, task, static_cast<uint64_t>(length), static_cast<uint64_t>(index)));
  // ~8 bytes per token is generous for English BPE; the caller cuts the tokens it needs.
  const size_t want = static_cast<size_t>(length + 1024) * 8;
  size_t start = src.size() > want ? r.below(src.size() - want) : 0;
  // Begin at a line (wikitext) or sentence start so the prefix reads naturally.
  const size_t b = src.find(task == "fidelity_wikitext" ? "\n" : ". ", start);
  if (b != std::string::npos && b + 2 < src.size()) start = b + (task == "fidelity_wikitext" ? 1 : 2);
  std::string out = src.substr(start, want);
  while (out.size() < want) {  // a source shorter than the window wraps around
    out.push_back(' ');
    out.append(src, 0, want - std::min(want, out.size()));
  }
  return out;
}

}  // namespace tappa::evalkv
