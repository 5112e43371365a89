// Attention-pattern measurements and the label rules: see patterns.h and docs/ANALYSIS.md.
#include "analysis/patterns.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "tappa/error.h"

namespace tappa::analysis {

namespace {

std::string fmt(const char* f, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

// Top-k set into `out` (ascending keys), using `idx` as scratch. O(n log k).
void top_keys_into(std::span<const float> probs, int k, double coverage, std::vector<int64_t>& out,
                   std::vector<int32_t>& idx) {
  out.clear();
  const int n = static_cast<int>(probs.size());
  if (k <= 0 || n == 0) return;
  idx.resize(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  const int kk = std::min(k, n);
  // Larger probability first, then lower key: a strict weak order since the inputs are finite.
  std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](int32_t a, int32_t b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  double total = 0;
  for (float p : probs) total += p;
  const double need = coverage * total;
  double acc = 0;
  for (int i = 0; i < kk; ++i) {
    const float p = probs[idx[i]];
    if (!(p > 0.f)) break;
    out.push_back(idx[i]);
    acc += p;
    if (acc >= need) break;
  }
  std::sort(out.begin(), out.end());
}

// Lattice {nP ± w : n ≥ 1} membership for offset δ.
inline bool on_lattice(int delta, int P, int w) {
  if (P <= 0 || delta < P - w) return false;
  const int r = delta % P;
  return r <= w || P - r <= w;
}

}  // namespace

std::vector<int64_t> top_keys(std::span<const float> probs, int k, double coverage) {
  std::vector<int64_t> out;
  std::vector<int32_t> idx;
  top_keys_into(probs, k, coverage, out, idx);
  return out;
}

double jaccard(std::span<const int64_t> a, std::span<const int64_t> b) {
  if (a.empty() && b.empty()) return 1.0;
  size_t i = 0, j = 0, inter = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] < b[j]) ++i;
    else if (b[j] < a[i]) ++j;
    else { ++inter; ++i; ++j; }
  }
  return static_cast<double>(inter) / static_cast<double>(a.size() + b.size() - inter);
}

PeriodEstimate dominant_period(std::span<const double> series, int min_lag) {
  PeriodEstimate out;
  const int n = static_cast<int>(series.size());
  if (n < 4) return out;
  double mean = 0;
  for (double v : series) mean += v;
  mean /= n;
  std::vector<double> x(series.begin(), series.end());
  double energy = 0;
  for (double& v : x) {
    v -= mean;
    energy += v * v;
  }
  if (!(energy > 0)) return out;  // flat profile: no structure at all
  const int max_lag = n / 2;
  std::vector<double> r(static_cast<size_t>(max_lag) + 2, 0.0);
  for (int l = 0; l <= max_lag + 1 && l < n; ++l) {
    double s = 0;
    for (int i = 0; i + l < n; ++i) s += x[i] * x[i + l];
    r[l] = s / energy;
  }
  int z = 1;  // end of the central lobe: the first lag where the correlation is gone
  while (z <= max_lag && r[z] > 0) ++z;
  if (z > max_lag) return out;
  double best = 0;
  for (int l = std::max(z, std::max(min_lag, 1)); l <= max_lag; ++l)
    if (r[l] > r[l - 1] && r[l] >= r[l + 1]) best = std::max(best, r[l]);
  if (!(best > 0)) return out;
  for (int l = std::max(z, std::max(min_lag, 1)); l <= max_lag; ++l)
    if (r[l] > r[l - 1] && r[l] >= r[l + 1] && r[l] >= 0.9 * best) {
      out.period = l;
      out.strength = std::min(1.0, r[l]);
      break;
    }
  return out;
}

PatternMetrics measure_patterns(std::span<const AttentionRow> rows, const PatternParams& prm) {
  const int R = static_cast<int>(rows.size());
  if (R < 2) throw Error("attention patterns: need at least 2 rows (got " + std::to_string(R) + ")");
  if (prm.top_k < 1 || prm.local_band < 0 || prm.n_sink < 0 || prm.max_offset < 0 || prm.min_period < 2 ||
      !(prm.topk_coverage > 0 && prm.topk_coverage <= 1) ||
      !(prm.persistent_fraction > 0 && prm.persistent_fraction <= 1))
    throw Error("attention patterns: invalid parameters");
  for (int r = 0; r < R; ++r) {
    const AttentionRow& row = rows[r];
    if (row.pos < 0 || static_cast<int64_t>(row.probs.size()) != row.pos + 1)
      throw Error("attention patterns: the row of query position " + std::to_string(row.pos) + " has " +
                  std::to_string(row.probs.size()) + " entries, expected position + 1");
    if (r > 0 && row.pos <= rows[r - 1].pos)
      throw Error("attention patterns: rows must be in increasing position order (" +
                  std::to_string(rows[r - 1].pos) + " then " + std::to_string(row.pos) + ")");
    for (float p : row.probs)
      if (!std::isfinite(p))
        throw Error("attention patterns: non-finite probability in the row of position " + std::to_string(row.pos));
  }

  PatternMetrics m;
  m.n_rows = R;
  const int64_t pmin = rows.front().pos, pmax = rows.back().pos;
  const int b = prm.local_band;

  // Top-k sets of every row (kept: R·k indices), their stability and the persistent keys.
  std::vector<std::vector<int64_t>> sets(static_cast<size_t>(R));
  std::vector<int32_t> idx;
  for (int r = 0; r < R; ++r) top_keys_into(rows[r].probs, prm.top_k, prm.topk_coverage, sets[r], idx);

  std::vector<int64_t> off_a, off_b;
  double jac = 0, jac_shift = 0, pred = 0;
  for (int r = 0; r + 1 < R; ++r) {
    const std::vector<int64_t>& A = sets[r];
    const std::vector<int64_t>& B = sets[r + 1];
    jac += jaccard(A, B);
    off_a.clear();
    off_b.clear();
    for (auto it = A.rbegin(); it != A.rend(); ++it) off_a.push_back(rows[r].pos - *it);  // ascending
    for (auto it = B.rbegin(); it != B.rend(); ++it) off_b.push_back(rows[r + 1].pos - *it);
    jac_shift += jaccard(off_a, off_b);
    if (B.empty()) {
      pred += 1.0;
    } else {
      int hit = 0;
      for (int64_t j : B)
        if (std::binary_search(A.begin(), A.end(), j) ||
            std::binary_search(off_a.begin(), off_a.end(), rows[r + 1].pos - j))
          ++hit;
      pred += static_cast<double>(hit) / static_cast<double>(B.size());
    }
  }
  m.topk_stability = jac / (R - 1);
  m.topk_shift_stability = jac_shift / (R - 1);
  m.topk_predictability = pred / (R - 1);

  // Persistent keys: top-k outside the row's local band in ≥ persistent_fraction of the rows.
  std::vector<int32_t> count(static_cast<size_t>(pmax) + 1, 0);
  for (int r = 0; r < R; ++r)
    for (int64_t j : sets[r])
      if (rows[r].pos - j > b) ++count[j];
  std::vector<char> persistent(count.size(), 0);
  for (size_t j = 0; j < count.size(); ++j)
    if (count[j] > 0 && static_cast<double>(count[j]) >= prm.persistent_fraction * R) {
      persistent[j] = 1;
      m.persistent_keys.push_back(static_cast<int64_t>(j));
    }

  // Row-wise masses.
  double sink = 0, sink4 = 0, reacc = 0, local = 0;
  for (const AttentionRow& row : rows) {
    const int64_t p = row.pos;
    sink += row.probs[0];
    for (int64_t j = 0; j < std::min<int64_t>(prm.n_sink, p + 1); ++j) sink4 += row.probs[j];
    for (int64_t j : m.persistent_keys)
      if (j <= p && p - j > b) reacc += row.probs[j];
    for (int64_t j = std::max<int64_t>(0, p - b); j <= p; ++j) local += row.probs[j];
  }
  m.sink_mass = sink / R;
  m.sink4_mass = sink4 / R;
  m.reaccess_mass = reacc / R;
  m.local_mass = local / R;

  // Offset profile over δ = 0..Dmax (every δ exists in every row).
  const int D = static_cast<int>(std::min<int64_t>(prm.max_offset, pmin));
  m.max_offset = D;
  m.offset_profile.assign(static_cast<size_t>(D) + 1, 0.0);
  for (const AttentionRow& row : rows) {
    const int64_t p = row.pos;
    for (int d = 0; d <= D; ++d) {
      const int64_t j = p - d;
      if (j < prm.n_sink || persistent[j]) continue;
      m.offset_profile[d] += row.probs[j];
    }
  }
  for (double& v : m.offset_profile) v /= R;
  for (int d = 1; d <= D; ++d)
    if (m.offset_profile[d] > m.best_offset_mass) {
      m.best_offset_mass = m.offset_profile[d];
      m.best_offset = d;
    }

  // Periodicity of the profile beyond the previous-token diagonal.
  const int lo = prm.min_period;
  if (D - lo + 1 >= 8) {
    const std::span<const double> tail(m.offset_profile.data() + lo, static_cast<size_t>(D - lo + 1));
    const PeriodEstimate pe = dominant_period(tail, lo);
    if (pe.period > 0) {
      const int P = pe.period, w = std::min(4, P / 20);
      m.period = P;
      m.period_strength = pe.strength;
      m.period_tolerance = w;
      double in_mass = 0, all_mass = 0;
      int in_count = 0;
      std::vector<double> bumps(static_cast<size_t>(D / P) + 2, 0.0);
      for (int d = lo; d <= D; ++d) {
        all_mass += m.offset_profile[d];
        if (on_lattice(d, P, w)) {
          in_mass += m.offset_profile[d];
          ++in_count;
          bumps[static_cast<size_t>((d + w) / P)] += m.offset_profile[d];
        }
      }
      m.period_mass = in_mass;
      const double chance = all_mass * in_count / static_cast<double>(D - lo + 1);
      m.period_excess = std::max(0.0, in_mass - chance);
      const double top = *std::max_element(bumps.begin(), bumps.end());
      if (top > 0)
        for (double v : bumps)
          if (v > 0 && v >= 0.25 * top) ++m.period_peaks;
    }
  }

  // Sequential evidence outside the lattice (all of it when there is no period).
  double band_off = 0, best_off = 0;
  for (int d = 0; d <= std::min(b, D); ++d)
    if (!on_lattice(d, m.period, m.period_tolerance)) band_off += m.offset_profile[d];
  for (int d = 1; d <= D; ++d)
    if (!on_lattice(d, m.period, m.period_tolerance)) best_off = std::max(best_off, m.offset_profile[d]);
  if (m.period == 0) band_off = std::max(band_off, m.local_mass);  // band keys are never excluded there
  m.sequential_off_period = std::max(band_off, best_off);
  return m;
}

Classification classify(const PatternMetrics& m, const Thresholds& t) {
  Classification c;
  c.predictability = m.topk_predictability;
  c.reaccess_signal = m.reaccess_mass;
  const bool period_ok =
      m.period > 0 && m.period_strength >= t.min_period_strength && m.period_peaks >= t.min_period_peaks;
  c.periodic_signal = period_ok ? m.period_excess : 0.0;
  const bool periodic = c.periodic_signal >= t.strong_signal;
  if (period_ok) c.period = m.period;
  c.sequential_signal = periodic ? m.sequential_off_period : std::max(m.local_mass, m.best_offset_mass);

  const bool re = c.reaccess_signal >= t.strong_signal;
  const bool seq = c.sequential_signal >= t.strong_signal;
  const PatternLabel periodic_label = c.period > 0 && c.period <= t.max_sequential_period
                                          ? PatternLabel::periodic_sequential
                                          : PatternLabel::seasonal;
  const std::string sig = fmt("re-access %.2f, sequential %.2f, periodic %.2f", c.reaccess_signal,
                              c.sequential_signal, c.periodic_signal) +
                          (c.period > 0 ? " (period " + std::to_string(c.period) + ")" : "");
  const int n_strong = int(re) + int(seq) + int(periodic);
  if (n_strong >= 2) {
    c.label = PatternLabel::mixed;
    c.reason = "several strong signals (>= " + fmt("%.2f", t.strong_signal) + "): " + sig;
  } else if (n_strong == 1) {
    c.label = re ? PatternLabel::reaccess : seq ? PatternLabel::sequential : periodic_label;
    c.reason = "one strong signal (>= " + fmt("%.2f", t.strong_signal) + "): " + sig;
    if (re) c.reason += fmt("; sink %.2f, %.0f persistent keys", m.sink_mass, double(m.persistent_keys.size()));
    if (seq) c.reason += fmt("; local band %.2f, best offset %.0f with %.2f", m.local_mass, m.best_offset,
                             m.best_offset_mass);
  } else if (c.predictability < t.min_predictability) {
    c.label = PatternLabel::unpredictable;
    c.reason = fmt("no strong signal and top-k predictability %.2f < %.2f: ", c.predictability,
                   t.min_predictability) + sig;
  } else {
    // Stable but diffuse: name the largest weak signal (ties: re-access, then sequential).
    const double best = std::max({c.reaccess_signal, c.sequential_signal, c.periodic_signal});
    c.label = c.reaccess_signal >= best     ? PatternLabel::reaccess
              : c.sequential_signal >= best ? PatternLabel::sequential
                                            : periodic_label;
    c.reason = fmt("no strong signal but top-k predictability %.2f >= %.2f; largest weak signal: ",
                   c.predictability, t.min_predictability) + sig;
  }
  return c;
}

}  // namespace tappa::analysis
