// Next-token sampling: greedy, or temperature with top-k and top-p (nucleus) cuts, seeded.
#include <algorithm>
#include <cmath>

#include "tappa/engine.h"

namespace tappa {

namespace {
// splitmix64: a small, well-mixed generator whose sequence is fixed across platforms and standard
// libraries (std::mt19937 is too, but std::uniform_real_distribution is not), so a seed reproduces
// the same text everywhere.
uint64_t next_u64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

int32_t argmax(std::span<const float> logits) {
  // First maximum wins, as in llama.cpp's greedy sampler.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), state_(params.seed) {}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature <= 0.0f) return argmax(logits);
  candidates_.clear();
  candidates_.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t k = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < k) {
    k = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.end(), by_logit);
    candidates_.resize(k);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  const float mx = candidates_[0].first;
  double sum = 0.0;
  for (auto& c : candidates_) {
    c.first = std::exp((c.first - mx) / params_.temperature);
    sum += c.first;
  }
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = 0;
    while (keep < candidates_.size()) {
      cum += candidates_[keep].first / sum;
      ++keep;
      if (cum >= params_.top_p) break;
    }
    candidates_.resize(keep);
    sum = 0.0;
    for (auto& c : candidates_) sum += c.first;
  }
  const double r = static_cast<double>(next_u64(state_) >> 11) * 0x1.0p-53 * sum;
  double acc = 0.0;
  for (const auto& c : candidates_) {
    acc += c.first;
    if (r < acc) return c.second;
  }
  return candidates_.back().second;
}

}  // namespace tappa
