#include "tappa/eval.h"

#include <cmath>

#include "eval/loglik.h"
#include "tappa/error.h"

namespace tappa::eval {

std::vector<double> score_item(Engine& engine, const Tokenizer& tok, const McItem& item) {
  std::vector<double> out;
  out.reserve(item.choices.size());
  ContinuationScorer scorer(engine);
  for (const McChoice& c : item.choices) out.push_back(scorer.score(encode_pair(tok, c.context, c.continuation)).loglik);
  return out;
}

int predicted_choice(const McItem& item, std::span<const double> logliks, bool norm) {
  if (logliks.size() != item.choices.size() || logliks.empty()) throw Error("scores do not match the item's choices");
  int best = 0;
  double best_v = -INFINITY;
  for (size_t i = 0; i < logliks.size(); ++i) {
    const double v = norm ? logliks[i] / static_cast<double>(item.choices[i].norm_len) : logliks[i];
    if (v > best_v) {
      best_v = v;
      best = static_cast<int>(i);
    }
  }
  return best;
}

namespace {
double stderr_of_mean(double p, int n) {
  // Sample std (n − 1) of n Bernoulli outcomes, over sqrt(n).
  if (n < 2) return 0.0;
  const double var = p * (1 - p) * n / (n - 1.0);
  return std::sqrt(var / n);
}
}  // namespace

McSummary summarise(std::span<const McItem> items, std::span<const std::vector<double>> logliks) {
  McSummary s;
  s.n = static_cast<int>(logliks.size());
  if (s.n == 0) return s;
  int hits = 0, hits_norm = 0;
  for (size_t i = 0; i < logliks.size(); ++i) {
    hits += predicted_choice(items[i], logliks[i], false) == items[i].gold;
    hits_norm += predicted_choice(items[i], logliks[i], true) == items[i].gold;
  }
  s.acc = static_cast<double>(hits) / s.n;
  s.acc_norm = static_cast<double>(hits_norm) / s.n;
  s.acc_stderr = stderr_of_mean(s.acc, s.n);
  s.acc_norm_stderr = stderr_of_mean(s.acc_norm, s.n);
  return s;
}

}  // namespace tappa::eval
