// RoPE channel energies, the theorem-based prediction and the channel swap: see rope_channels.h.
#include "analysis/rope_channels.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>

#include "tappa/error.h"

namespace tappa::analysis {

namespace {

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

void check_n_rot(int n_rot) {
  if (n_rot < 2 || n_rot % 2 != 0)
    throw Error("RoPE: n_rot must be even and >= 2 (got " + std::to_string(n_rot) + ")");
}

// Mean over rows of the L2 norm of dims (a, b).
double mean_pair_norm(const HeadRows& x, int a, int b) {
  double s = 0;
  for (int t = 0; t < x.n_rows; ++t) {
    const float* v = x.row(t);
    s += std::hypot(static_cast<double>(v[a]), static_cast<double>(v[b]));
  }
  return s / x.n_rows;
}

// Mean over rows of the L2 norm of dims [from, to).
double mean_rest_norm(const HeadRows& x, int from, int to) {
  double s = 0;
  for (int t = 0; t < x.n_rows; ++t) {
    const float* v = x.row(t);
    double n2 = 0;
    for (int d = from; d < to; ++d) n2 += static_cast<double>(v[d]) * v[d];
    s += std::sqrt(n2);
  }
  return s / x.n_rows;
}

}  // namespace

std::string_view frequency_class_name(FrequencyClass c) {
  switch (c) {
    case FrequencyClass::high: return "high";
    case FrequencyClass::mid: return "mid";
    case FrequencyClass::low: return "low";
  }
  return "?";
}

std::pair<int, int> channel_dims(int m, int n_rot, RopeLayout layout) {
  check_n_rot(n_rot);
  if (m < 0 || m >= n_rot / 2)
    throw Error("RoPE: channel " + std::to_string(m) + " out of range (" + std::to_string(n_rot / 2) + " channels)");
  return layout == RopeLayout::Neox ? std::pair{m, m + n_rot / 2} : std::pair{2 * m, 2 * m + 1};
}

std::vector<float> rope_thetas(int n_rot, double base) {
  check_n_rot(n_rot);
  std::vector<float> th(static_cast<size_t>(n_rot / 2));
  for (int m = 0; m < n_rot / 2; ++m) th[m] = static_cast<float>(std::pow(base, -2.0 * m / n_rot));
  return th;
}

double wavelength(double theta) {
  return theta > 0 ? 2.0 * std::numbers::pi / theta : std::numeric_limits<double>::infinity();
}

double resonance_gap(int lag, double theta) {
  const double two_pi = 2.0 * std::numbers::pi;
  double r = std::fmod(std::fabs(static_cast<double>(lag) * theta), two_pi);  // [0, 2π)
  return std::min(r, two_pi - r) / std::numbers::pi;
}

RopeChannelReport analyze_rope_channels(const HeadRows& q, const HeadRows& k, int n_rot, RopeLayout layout,
                                        std::span<const float> theta, const RopeChannelParams& prm) {
  check_n_rot(n_rot);
  if (q.dim != k.dim || q.dim < n_rot)
    throw Error("RoPE channels: head dims differ or are below n_rot (q " + std::to_string(q.dim) + ", k " +
                std::to_string(k.dim) + ", n_rot " + std::to_string(n_rot) + ")");
  if (q.n_rows < 1 || k.n_rows < 1 || !q.data || !k.data)
    throw Error("RoPE channels: need at least one query and one key");
  const int C = n_rot / 2;
  if (static_cast<int>(theta.size()) != C)
    throw Error("RoPE channels: " + std::to_string(theta.size()) + " frequencies for " + std::to_string(C) +
                " channels");

  RopeChannelReport rep;
  rep.context_length = prm.context_length > 0 ? prm.context_length : static_cast<double>(k.n_rows);
  rep.channels.resize(static_cast<size_t>(C));
  double total = 0;
  for (int m = 0; m < C; ++m) {
    const auto [a, b] = channel_dims(m, n_rot, layout);
    ChannelStats& c = rep.channels[m];
    c.e_q = mean_pair_norm(q, a, b);
    c.e_k = mean_pair_norm(k, a, b);
    c.energy = c.e_q * c.e_k;
    c.theta = theta[m];
    c.wavelength = wavelength(theta[m]);
    // High first: with a context shorter than high_max_wavelength a short channel is still "high".
    c.cls = c.wavelength <= prm.high_max_wavelength ? FrequencyClass::high
            : c.wavelength >= rep.context_length    ? FrequencyClass::low
                                                    : FrequencyClass::mid;
    total += c.energy;
    if (rep.dominant < 0 ? c.energy > 0 : c.energy > rep.channels[rep.dominant].energy) rep.dominant = m;
  }
  for (ChannelStats& c : rep.channels) c.share = total > 0 ? c.energy / total : 0.0;
  if (rep.dominant >= 0) {
    const ChannelStats& d = rep.channels[rep.dominant];
    rep.dominance_ratio = d.share;
    double rest2 = 0;
    for (int m = 0; m < C; ++m)
      if (m != rep.dominant) rest2 += rep.channels[m].energy * rep.channels[m].energy;
    rep.dominance_over_rest = rest2 > 0 ? d.energy / std::sqrt(rest2) : std::numeric_limits<double>::infinity();
    rep.predicted_spacing = d.wavelength;
    rep.dominant_class = d.cls;
  }
  if (n_rot < q.dim) rep.unrotated_energy = mean_rest_norm(q, n_rot, q.dim) * mean_rest_norm(k, n_rot, k.dim);
  return rep;
}

Prediction predict_pattern(double qsim, double ksim, const RopeChannelReport& rope, const PredictionThresholds& t,
                           const SeasonalEvidence& se) {
  Prediction p;
  const bool dominant = rope.dominant >= 0 && rope.dominance_ratio >= t.min_dominance;
  const std::string cls = rope.dominant >= 0 ? std::string(frequency_class_name(rope.dominant_class)) : "";
  const std::string dom_desc =
      rope.dominant < 0 ? std::string("no channel energy")
                        : "channel " + std::to_string(rope.dominant) + fmt(" holds %.2f of the energy", rope.dominance_ratio) +
                              " (" + cls + " frequency, wavelength " + fmt("%.1f", rope.predicted_spacing) + ")";

  if (qsim < t.high_qsim) {
    p.label = PatternLabel::unpredictable;
    p.reason = fmt("q-similarity %.2f < %.2f: queries jump, so do the attended keys (Prop 4.1)", qsim, t.high_qsim);
    return p;
  }
  if (se.lag >= 2 && se.q_lag_sim >= t.high_qsim && se.k_lag_sim >= t.high_ksim && se.k_lag_sim > ksim) {
    // θ_m* from the channel table, or from the spacing for a hand-made report without one.
    const double th = rope.dominant >= 0 && rope.dominant < static_cast<int>(rope.channels.size())
                          ? rope.channels[rope.dominant].theta
                          : (rope.predicted_spacing > 0 ? 2.0 * std::numbers::pi / rope.predicted_spacing : 0.0);
    const double gap = rope.dominant >= 0 ? resonance_gap(se.lag, th) : 0.0;
    if (!dominant || gap <= t.max_resonance_gap) {
      p.label = PatternLabel::seasonal;
      p.spacing = se.lag;
      p.reason = "queries and keys repeat with period " + std::to_string(se.lag) +
                 fmt(" (lag similarity q %.2f, k %.2f)", se.q_lag_sim, se.k_lag_sim) +
                 (dominant ? fmt(", resonance gap %.3f", gap) : std::string(", no dominant channel")) + " (Thm 5.4)";
      return p;
    }
  }
  if (dominant && rope.dominant_class == FrequencyClass::low) {
    p.label = PatternLabel::reaccess;
    p.spacing = 0;
    p.reason = fmt("q-similarity %.2f and a low-frequency dominant channel: ", qsim) + dom_desc +
               "; the same keys keep their scores (Thm 5.1)";
    return p;
  }
  if (ksim >= t.high_ksim) {
    if (dominant && rope.dominant_class == FrequencyClass::high) {
      p.label = PatternLabel::periodic_sequential;
      p.spacing = rope.predicted_spacing;
      p.reason = fmt("q-similarity %.2f, k-similarity %.2f and a high-frequency dominant channel: ", qsim, ksim) +
                 dom_desc + fmt("; diagonals every %.1f tokens (Thm 5.3)", p.spacing);
    } else {
      p.label = PatternLabel::sequential;
      p.reason = fmt("q-similarity %.2f and k-similarity %.2f: logits constant along diagonals (Thm 5.2)", qsim,
                     ksim);
    }
    return p;
  }
  p.label = PatternLabel::reaccess;
  p.confident = false;
  p.reason = fmt("q-similarity %.2f but k-similarity %.2f and no low-frequency dominant channel: no theorem applies; "
                 "stable queries keep favouring the same keys by content",
                 qsim, ksim);
  return p;
}

void swap_channels(float* vec, int head_dim, RopeLayout layout, int m_from, int m_to, int n_rot) {
  if (n_rot == 0) n_rot = head_dim;
  if (n_rot > head_dim)
    throw Error("RoPE: n_rot " + std::to_string(n_rot) + " exceeds the head dim " + std::to_string(head_dim));
  const auto [a1, b1] = channel_dims(m_from, n_rot, layout);
  const auto [a2, b2] = channel_dims(m_to, n_rot, layout);
  std::swap(vec[a1], vec[a2]);
  std::swap(vec[b1], vec[b2]);
}

void swap_channels_all(float* buf, long long n_vectors, int head_dim, RopeLayout layout, int m_from, int m_to,
                       int n_rot) {
  for (long long i = 0; i < n_vectors; ++i) swap_channels(buf + i * head_dim, head_dim, layout, m_from, m_to, n_rot);
}

}  // namespace tappa::analysis
