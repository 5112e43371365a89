// Fidelity of a compressed cache against the full one, from the logits both produce over the same
// teacher-forced continuation: KL(full ‖ compressed) of the next-token distributions, top-1
// agreement, and the continuation's negative log-likelihood under each; plus the greedy agreement
// length (tokens until two greedy generations first differ).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace tappa::evalkv {

// log-softmax of one row, in double (logits are fp32; the normaliser needs the range).
void log_softmax(std::span<const float> logits, std::vector<double>& out);

struct FidelityAccumulator {
  // One position: reference (full cache) and compressed logits, and the token that follows.
  void add(std::span<const float> full, std::span<const float> compressed, int32_t next_token);
  int n = 0;
  double kl_sum = 0.0;       // Σ KL(p_full ‖ p_comp), nats
  double top1_same = 0.0;    // positions where both argmaxes agree
  double nll_sum = 0.0;      // Σ −log p_comp(next)
  double nll_full_sum = 0.0; // Σ −log p_full(next)
  double kl() const { return n ? kl_sum / n : 0.0; }
  double top1() const { return n ? top1_same / n : 0.0; }
  double nll() const { return n ? nll_sum / n : 0.0; }
  double nll_full() const { return n ? nll_full_sum / n : 0.0; }

 private:
  std::vector<double> lp_full_, lp_comp_;
};

// Tokens at the start where a and b agree.
int agreement_length(std::span<const int32_t> a, std::span<const int32_t> b);

}  // namespace tappa::evalkv
