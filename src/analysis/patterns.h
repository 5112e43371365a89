// Measured attention patterns of one head: numbers computed from R attention rows of consecutive
// query positions, and a rule-based label (PatternLabel) with the evidence behind it. This is the
// empirical side of TAPPA (PAPER.md §1.2, §1.6 "empirical pattern labels"); rope_channels.h holds
// the theory side, which predicts the same labels from q/k similarity and RoPE channels.
//
// Conventions. A row is the softmax attention of the query at position p over the keys 0..p of an
// uncompressed cache (key index == key position), so it has p + 1 entries summing to ~1. The
// relative offset of key j is δ = p − j (δ = 0: the query's own token, δ = 1: previous token).
// All masses are fractions of a row's attention averaged over rows, so they lie in [0, 1] and
// different signals can be compared directly. Everything is deterministic (ties broken by key
// index, no randomness) and done in double.
//
// See docs/ANALYSIS.md for the definitions in prose and the reasoning behind every default.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "analysis/labels.h"

namespace tappa::analysis {

// One attention row (a view; the caller owns the memory).
struct AttentionRow {
  int64_t pos = 0;               // query position p
  std::span<const float> probs;  // attention over keys 0..p (size p + 1)
};

struct PatternParams {
  // Top-k key set of a row: the k most attended keys (ties: lower key first), but it stops early
  // once it holds `topk_coverage` of the row's mass and never takes a key with zero mass. The
  // early stop matters for concentrated heads: a sink head's row is {0} instead of key 0 plus 15
  // near-zero noise keys that change every step and would make a perfectly stable head look random.
  int top_k = 16;
  double topk_coverage = 0.9;
  // Keys 0..n_sink-1 are "the first tokens": sink4_mass sums them, and they are left out of the
  // offset profile (a sink sits at δ = p, different for every row, and would smear a block there).
  int n_sink = 4;
  // Local diagonal band: keys p − local_band .. p (previous tokens / sliding window).
  int local_band = 4;
  // A key is persistent (re-accessed) if it is in the top-k set, outside the local band, in at
  // least this fraction of the rows.
  double persistent_fraction = 0.75;
  // Offset profile length: δ = 0 .. min(max_offset, smallest p) (every δ then exists in every row,
  // so each profile value averages exactly R rows).
  int max_offset = 1024;
  // Smallest period (and profile offset) considered by the periodicity analysis: δ < 2 is the
  // previous-token / self diagonal, which is a sequential signal, not a period.
  int min_period = 2;
};

struct PatternMetrics {
  int n_rows = 0;
  int max_offset = 0;  // Dmax actually used: min(params.max_offset, smallest p)

  // Stability of the top-k sets between consecutive rows r, r+1 (means over the R − 1 pairs).
  double topk_stability = 0;        // Jaccard |S_r ∩ S_r+1| / |S_r ∪ S_r+1| of the key sets
  double topk_shift_stability = 0;  // the same on the sets of relative offsets {p − j}: 1 for a diagonal
  // Fraction of S_r+1 that row r predicts: keys already in S_r (re-access) or at an offset already
  // in S_r's offsets (moved along a diagonal). 1 for sink, diagonal, periodic, seasonal and their
  // mixtures; ≈ 2k/N by chance for random rows. The "is this head predictable" number.
  double topk_predictability = 0;

  // Sinks and re-access (vertical lines).
  double sink_mass = 0;   // mean mass on key 0
  double sink4_mass = 0;  // mean mass on keys 0..n_sink-1
  std::vector<int64_t> persistent_keys;  // ascending
  double reaccess_mass = 0;  // mean mass on persistent keys (each row: only those outside its local band)

  // Sequential (one diagonal).
  double local_mass = 0;        // mean mass on keys p − local_band .. p (all keys counted)
  int best_offset = 0;          // δ ≥ 1 with the largest offset-profile value (0 if Dmax < 1)
  double best_offset_mass = 0;  // that value

  // Mean attention versus relative offset: offset_profile[δ] = mean over rows of probs[p − δ],
  // δ = 0..max_offset, with sink keys (j < n_sink) and persistent keys counted as 0 so that the
  // re-access part does not masquerade as offset structure.
  std::vector<double> offset_profile;

  // Periodicity of the offset profile over δ ∈ [min_period, Dmax] (parallel diagonals / re-visits).
  // P: the best candidate of dominant_period, 0 if there is none. Even pure noise usually yields a
  // candidate (strength ~0.1-0.2 for ~500 offsets): judge it by period_strength / period_peaks, as
  // classify() does.
  int period = 0;
  double period_strength = 0;    // normalised autocorrelation of the profile at lag P, in [0, 1]
  int period_tolerance = 0;      // w = min(4, P / 20): lattice points are nP ± w
  double period_mass = 0;        // profile mass on the lattice {nP ± w, n ≥ 1} (mass on periodic offsets)
  double period_excess = 0;      // period_mass minus what the lattice would hold if the profile's
                                 // mass in [min_period, Dmax] were spread evenly (chance level)
  int period_peaks = 0;          // lattice points n holding ≥ 25% of the largest lattice point's mass
  // Sequential evidence the lattice does not explain: max(local-band profile mass off the lattice,
  // largest single offset off the lattice). Equals max(local, best offset) when there is no period.
  double sequential_off_period = 0;
};

// Measures a head. Rows must be in increasing position order, each with pos + 1 finite entries,
// R ≥ 2; throws tappa::Error otherwise (or for bad params).
PatternMetrics measure_patterns(std::span<const AttentionRow> rows, const PatternParams& params = {});

// Classification thresholds; the defaults and why are in docs/ANALYSIS.md ("Label rules").
struct Thresholds {
  // A signal is strong when it holds at least this share of the attention (mean over rows). 0.3:
  // well above the chance level of every signal (< 0.1 each for random rows) yet low enough that
  // a pattern sharing the row with a sink (the usual case in LLMs) still registers.
  double strong_signal = 0.3;
  // Below this top-k predictability (and with no strong signal) a head is unpredictable. 0.5: more
  // than half of the keys that matter at step t+1 are foreseeable from step t.
  double min_predictability = 0.5;
  // A period counts only if the profile's autocorrelation at P reaches this (noise level for
  // ~500 offsets is ~0.1) and the lattice shows at least min_period_peaks points.
  double min_period_strength = 0.3;
  int min_period_peaks = 2;
  // Periods up to this are periodic_sequential (RoPE high-frequency spacing 2π/θ_m*, a few to a few
  // tens of tokens), longer ones seasonal. Same boundary as RopeChannelParams::high_max_wavelength.
  int max_sequential_period = 32;
};

struct Classification {
  PatternLabel label = PatternLabel::unpredictable;
  // The three signals the rules compare (masses in [0, 1]).
  double reaccess_signal = 0;    // reaccess_mass
  double sequential_signal = 0;  // max(local, best offset), or sequential_off_period when periodic
  double periodic_signal = 0;    // period_excess if the period passes strength/peaks, else 0
  double predictability = 0;     // topk_predictability
  int period = 0;                // P when periodic_signal > 0
  std::string reason;            // one line: which rule fired, with the numbers
};

// Rules (in order):
//  1. strong = {re-access, sequential, periodic} signals ≥ strong_signal (sequential off the period
//     lattice when a period is strong, since the lattice's first diagonal is part of the period).
//  2. ≥ 2 strong → mixed;  1 strong → its label (periodic: P ≤ max_sequential_period →
//     periodic_sequential, else seasonal).
//  3. none strong: predictability < min_predictability → unpredictable; otherwise the label of the
//     largest (weak) signal — a stable head whose mass is spread thin (e.g. a wide local window).
Classification classify(const PatternMetrics& m, const Thresholds& t = {});

// Building blocks (exposed for tests and callers).

// Top-k key set as described in PatternParams, ascending key order.
std::vector<int64_t> top_keys(std::span<const float> probs, int k, double coverage);
// Jaccard index of two ascending sets; 1 for two empty sets.
double jaccard(std::span<const int64_t> a, std::span<const int64_t> b);

struct PeriodEstimate {
  int period = 0;         // 0 if none
  double strength = 0;    // r(P) in [0, 1]
};
// Dominant period of a series by its autocorrelation r(l) = Σ x_i x_{i+l} / Σ x_i² (x = series −
// mean, lags up to n/2): the first lag where r ≤ 0 ends the central lobe; among the local maxima
// after it with lag ≥ min_lag, the smallest lag whose r is within 90% of the best (so the
// fundamental wins over its multiples). None if r never drops to 0 or no peak is positive.
PeriodEstimate dominant_period(std::span<const double> series, int min_lag);

}  // namespace tappa::analysis
