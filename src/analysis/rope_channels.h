// RoPE frequency-channel analysis of one head and the theory-side pattern prediction.
//
// RoPE rotates the 2-D channel m of a head (two dimensions, paired as the model's layout says) by
// the angle pos·θ_m. Writing the logit as a sum over channels (PAPER.md §1.1),
//   a_{t,i} = Σ_m ‖q_t^(m)‖·‖k_i^(m)‖·cos(φ^(m)_{t,i} + (i − t)·θ_m),
// the magnitude product ‖q^(m)‖‖k^(m)‖ bounds how much channel m can move the logit; a channel whose
// product dominates the others sets the shape of the attention map: a high-frequency (short
// wavelength 2π/θ) one makes diagonals repeat every 2π/θ_m* tokens (Thm 5.3), a low-frequency one
// makes the logit nearly independent of position, so the same keys win every step (Thm 5.1).
// All energies are on pre-RoPE vectors (the rotation does not change channel norms anyway).
// predict_pattern() turns q-similarity, k-similarity and this report into a PatternLabel.
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "analysis/labels.h"
#include "analysis/qsim.h"
#include "tappa/model.h"  // tappa::RopeLayout

namespace tappa::analysis {

enum class FrequencyClass { high, mid, low };
std::string_view frequency_class_name(FrequencyClass c);  // "high", "mid", "low"

// The two dimensions of channel m: Norm (2m, 2m + 1); Neox (m, m + n_rot/2). Throws tappa::Error if
// n_rot is odd / < 2 or m is outside [0, n_rot/2).
std::pair<int, int> channel_dims(int m, int n_rot, RopeLayout layout);

// Plain RoPE frequencies θ_m = base^(−2m/n_rot), m = 0..n_rot/2−1 (no llama3 / YaRN rescaling:
// pass the model's own table, Model::rope_inv_freq(), when it has one).
std::vector<float> rope_thetas(int n_rot, double base);

// 2π/θ (tokens per full turn); +inf for θ ≤ 0 (an unrotated channel never repeats).
double wavelength(double theta);

// Distance of L·θ from the nearest multiple of 2π, divided by π: 0 = the channel's phase comes back
// exactly after L tokens (resonance, Thm 5.4), 1 = half a turn off.
double resonance_gap(int lag, double theta);

struct RopeChannelParams {
  // Wavelength ≤ this: high frequency. 32 tokens: the spacings the paper's relocation experiment
  // produces (m* = 2..5 → 9.5–18.5 tokens for d = 128) stay well inside, and it is the same boundary
  // as Thresholds::max_sequential_period, so a predicted spacing and a measured period land on the
  // same side (periodic_sequential vs seasonal).
  double high_max_wavelength = 32;
  // Wavelength ≥ this: low frequency (the channel does not complete a turn over the analysed
  // context, so its positional phase is ~monotone/flat there). 0 = the number of key rows given.
  double context_length = 0;
};

struct ChannelStats {
  double e_q = 0;     // mean_t ‖q_t^(m)‖
  double e_k = 0;     // mean_i ‖k_i^(m)‖
  double energy = 0;  // E[m] = e_q · e_k, the magnitude product bounding channel m's logit term
  double share = 0;   // E[m] / Σ_m E (0 if the sum is 0)
  double theta = 0;
  double wavelength = 0;  // 2π/θ_m
  FrequencyClass cls = FrequencyClass::mid;
};

struct RopeChannelReport {
  std::vector<ChannelStats> channels;  // n_rot/2 rotated channels
  int dominant = -1;                   // m* = argmax E (lowest m on ties); -1 if all energies are 0
  double dominance_ratio = 0;          // E[m*] / Σ E
  // E[m*] / sqrt(Σ_{m≠m*} E[m]²): the dominant amplitude against the typical size of the rest when
  // their phases are unrelated (random-phase sum), i.e. how far the logit is "one cosine".
  double dominance_over_rest = 0;
  double predicted_spacing = 0;  // 2π/θ_m*: diagonal spacing if m* drives a periodic pattern
  FrequencyClass dominant_class = FrequencyClass::mid;
  double context_length = 0;     // the value used for the low class
  // Partial rotary (n_rot < head_dim): mean‖q_rest‖·mean‖k_rest‖ of the unrotated dims, which add a
  // position-independent term. Not part of Σ E or the shares.
  double unrotated_energy = 0;
};

// q: pre-RoPE queries [Tq][D] of one head, k: pre-RoPE keys [Tk][D] of its KV head (strided views,
// see qsim.h); theta: θ_m for the n_rot/2 channels. Throws tappa::Error on inconsistent shapes.
RopeChannelReport analyze_rope_channels(const HeadRows& q, const HeadRows& k, int n_rot, RopeLayout layout,
                                        std::span<const float> theta, const RopeChannelParams& params = {});

// ---- prediction from the theorems ----

struct PredictionThresholds {
  // "High" q/k-similarity. The paper's example heads sit at ~0.96–0.99 (predictable) and ~0.30–0.38
  // (unpredictable); 0.65 is the midpoint of those clusters.
  double high_qsim = 0.65;
  double high_ksim = 0.65;
  // m* dominates when it holds ≥ 25% of Σ E: for 32–64 channels its amplitude is then ≥ ~2× the
  // random-phase size of all the others together (see docs/ANALYSIS.md).
  double min_dominance = 0.25;
  // Seasonal: lag-L similarities of queries and keys must be high and L·θ_m* within this (in units
  // of π) of a full number of turns.
  double max_resonance_gap = 0.1;
};

// Optional evidence for the seasonal rule (Thm 5.4): L and the lag-L similarities of queries and
// keys (qsim_lag_head with lag = L). lag = 0: not available.
struct SeasonalEvidence {
  int lag = 0;
  double q_lag_sim = 0;
  double k_lag_sim = 0;
};

struct Prediction {
  PatternLabel label = PatternLabel::unpredictable;
  double spacing = 0;      // predicted diagonal spacing / period in tokens (0 if none)
  bool confident = true;   // false when no theorem's conditions hold and the label is a best guess
  std::string reason;
};

// Rules, first match wins (qsim/ksim in the cosine sense: larger = more alike):
//  1. qsim < high_qsim                                           → unpredictable   (Prop 4.1)
//  2. seasonal evidence: q_lag ≥ high_qsim, k_lag ≥ high_ksim, k_lag > ksim (the keys repeat at L
//     rather than being alike everywhere), and no dominant channel or gap(L, θ_m*) ≤ max_gap
//                                                                 → seasonal, spacing L (Thm 5.4)
//  3. dominant channel (ratio ≥ min_dominance) of low frequency   → reaccess       (Thm 5.1)
//  4. ksim ≥ high_ksim: dominant high-frequency channel            → periodic_sequential, spacing
//                                                                   2π/θ_m*         (Thm 5.3)
//                       otherwise                                  → sequential     (Thm 5.2)
//  5. otherwise (stable queries, dissimilar keys, no low-frequency dominant channel): no theorem
//     applies; stable queries keep scoring the same keys by content → reaccess, confident = false.
Prediction predict_pattern(double qsim, double ksim, const RopeChannelReport& rope,
                           const PredictionThresholds& t = {}, const SeasonalEvidence& seasonal = {});

// ---- intervention ----

// Swaps the two dimensions of channel m_from with those of m_to in one pre-RoPE head vector
// (vec[0..head_dim)), keeping the pair order: the dominant-channel relocation of PAPER.md §1.5.
// n_rot = 0 means n_rot = head_dim. Throws tappa::Error on a bad channel or shape.
void swap_channels(float* vec, int head_dim, RopeLayout layout, int m_from, int m_to, int n_rot = 0);
// The same on n_vectors contiguous head vectors (e.g. a [T][H*D] buffer has T*H of them).
void swap_channels_all(float* buf, long long n_vectors, int head_dim, RopeLayout layout, int m_from, int m_to,
                       int n_rot = 0);

}  // namespace tappa::analysis
