#include "tappa/prune.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "io/text.h"  // quoted(): echoed input stays on one line (control bytes escaped)
#include "tappa/error.h"

namespace tappa::prune {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

int parse_index(std::string_view s, std::string_view whole) {
  s = trim(s);
  int v = -1;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < 0)
    throw Error("bad layer list " + io::quoted(whole) + ": " + io::quoted(s) +
                " is not a layer index (expected e.g. 3,5,7-9)");
  return v;
}

}  // namespace

std::vector<int> parse_layer_list(std::string_view text, int n_layer) {
  std::set<int> out;
  std::string_view rest = trim(text);
  if (rest.empty()) return {};
  while (true) {
    const size_t comma = rest.find(',');
    const std::string_view item = trim(rest.substr(0, comma));
    const size_t dash = item.find('-');
    if (dash == std::string_view::npos) {
      out.insert(parse_index(item, text));
    } else {
      const int a = parse_index(item.substr(0, dash), text), b = parse_index(item.substr(dash + 1), text);
      if (b < a) throw Error("bad layer list " + io::quoted(text) + ": range " + io::quoted(item) + " is reversed");
      // Checked before the loop below, so that "0-2000000000" is an error, not minutes of inserting.
      if (n_layer > 0 && b >= n_layer)
        throw Error("layer " + std::to_string(b) + " does not exist (the model has " + std::to_string(n_layer) + " layers)");
      if (b - a >= (1 << 16)) throw Error("bad layer list " + io::quoted(text) + ": range " + io::quoted(item) + " is too long");
      for (int l = a; l <= b; ++l) out.insert(l);
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  std::vector<int> v(out.begin(), out.end());
  if (n_layer > 0 && !v.empty() && v.back() >= n_layer)
    throw Error("layer " + std::to_string(v.back()) + " does not exist (the model has " + std::to_string(n_layer) +
                " layers, 0.." + std::to_string(n_layer - 1) + ")");
  return v;
}

std::string format_layer_list(const std::vector<int>& layers) {
  std::string s;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(layers[i]);
  }
  return s;
}

std::vector<int> parse_order_text(std::string_view text, std::string_view what) {
  std::vector<int> order;
  const std::string_view t = trim(text);
  if (!t.empty() && t.front() == '{') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(t);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string(what) + ": not valid JSON (" + e.what() + ")");
    }
    if (j.is_object() && j.contains("score_type") && j["score_type"].is_string() && !j.contains("order")) {
      const std::string t = j["score_type"].get<std::string>();
      if (t == "q_similarity" || t == "qsim")
        throw Error(std::string(what) + ": a q-similarity score file: its prune_order sorts the q-sims, it is not a "
                    "pruning order (build one with tappa prune-order)");
    }
    const char* key = j.contains("order") ? "order" : j.contains("prune_order") ? "prune_order" : nullptr;
    if (!key || !j[key].is_array()) throw Error(std::string(what) + ": no \"order\" or \"prune_order\" array");
    for (const auto& v : j[key]) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 1'000'000)
        throw Error(std::string(what) + ": order entries must be layer indices");
      order.push_back(v.get<int>());
    }
  } else {
    std::string s(t);
    std::replace(s.begin(), s.end(), ',', ' ');
    std::replace(s.begin(), s.end(), '\n', ' ');
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i;
      if (i >= s.size()) break;
      size_t j = i;
      while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\r') ++j;
      order.push_back(parse_index(std::string_view(s).substr(i, j - i), what));
      i = j;
    }
  }
  if (order.empty()) throw Error(std::string(what) + ": the order is empty");
  std::set<int> seen;
  for (int l : order)
    if (!seen.insert(l).second) throw Error(std::string(what) + ": layer " + std::to_string(l) + " appears twice");
  return order;
}

std::vector<double> parse_scores_text(std::string_view text, std::string_view key, std::string_view what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string(what) + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(std::string(what) + ": expected a JSON object");
  const nlohmann::json* holder = &j;
  if (!j.contains("scores") && j.contains(key)) holder = &j[std::string(key)];
  if (!holder->is_object() || !holder->contains("scores") || !(*holder)["scores"].is_array())
    throw Error(std::string(what) + ": no \"scores\" array (nor a \"" + std::string(key) + "\" object holding one)");
  std::vector<double> out;
  for (const auto& v : (*holder)["scores"]) {
    if (!v.is_number()) throw Error(std::string(what) + ": scores must be numbers");
    out.push_back(v.get<double>());
    if (!std::isfinite(out.back())) throw Error(std::string(what) + ": a score is not finite");
  }
  if (out.empty()) throw Error(std::string(what) + ": the score list is empty");
  return out;
}

nlohmann::json raw_score_json(RawScoreType type, const std::vector<double>& scores) {
  return {{"score_type", type == RawScoreType::bi ? "BI" : "q_similarity"},
          {"scores", scores},
          {"prune_order", ascending_order(scores)}};
}

}  // namespace tappa::prune
