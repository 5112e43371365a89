// q-similarity: see qsim.h. The official code materialises the T×T matrix per head; here every mode
// walks the T(T−1)/2 unordered pairs once (all 8 matrices are symmetric, so the mean over ordered
// off-diagonal pairs equals the mean over unordered pairs), and cosine uses the O(T·D) identity.
#include "analysis/qsim.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numbers>
#include <string>

#include "tappa/error.h"

namespace tappa::analysis {

namespace {

constexpr std::array<std::string_view, 8> kModeNames = {"cosine", "dot",     "euclidean", "l1",
                                                        "rbf",    "pearson", "angular",   "kl"};

// Four independent accumulators: deterministic (fixed order) and lets the compiler overlap the
// additions; the result differs from a single running sum only by rounding.
inline double dot(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

inline double sq_dist(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0;
  int i = 0;
  for (; i + 2 <= n; i += 2) {
    const double d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
    s0 += d0 * d0;
    s1 += d1 * d1;
  }
  for (; i < n; ++i) {
    const double d = a[i] - b[i];
    s0 += d * d;
  }
  return s0 + s1;
}

inline double l1_dist(const double* a, const double* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::fabs(a[i] - b[i]);
  return s;
}

// Copies the rows to double and applies the mode's per-vector transform, so that the pair entry
// is a cheap function of two prepared rows:
//   cosine, angular: q / max(‖q‖, eps)       pearson: (q − mean) / max(‖q − mean‖, eps)
//   kl: softmax probabilities (clamped, renormalised) in [0, T·D) and their logs in [T·D, 2·T·D)
//   dot, euclidean, l1, rbf: the raw values.
void prepare(const HeadRows& rows, const QsimOptions& opt, std::vector<double>& buf) {
  const int T = rows.n_rows, D = rows.dim;
  const size_t TD = static_cast<size_t>(T) * D;
  buf.resize(opt.mode == QsimMode::kl ? 2 * TD : TD);
  for (int t = 0; t < T; ++t) {
    const float* src = rows.row(t);
    double* v = buf.data() + static_cast<size_t>(t) * D;
    for (int d = 0; d < D; ++d) v[d] = static_cast<double>(src[d]);
    switch (opt.mode) {
      case QsimMode::pearson: {
        double mean = 0;
        for (int d = 0; d < D; ++d) mean += v[d];
        mean /= D;
        for (int d = 0; d < D; ++d) v[d] -= mean;
      }
        [[fallthrough]];
      case QsimMode::cosine:
      case QsimMode::angular: {
        const double inv = 1.0 / std::max(std::sqrt(dot(v, v, D)), kQsimNormEps);
        for (int d = 0; d < D; ++d) v[d] *= inv;
        break;
      }
      case QsimMode::kl: {
        // softmax over the D channels with the max subtracted (as torch.softmax), then clamp at
        // kl_eps and renormalise, exactly the official order of operations.
        double mx = v[0];
        for (int d = 1; d < D; ++d) mx = std::max(mx, v[d]);
        double sum = 0;
        for (int d = 0; d < D; ++d) sum += (v[d] = std::exp(v[d] - mx));
        double sum2 = 0;
        for (int d = 0; d < D; ++d) sum2 += (v[d] = std::max(v[d] / sum, opt.kl_eps));
        double* lg = buf.data() + TD + static_cast<size_t>(t) * D;
        for (int d = 0; d < D; ++d) {
          v[d] /= sum2;
          lg[d] = std::log(v[d]);
        }
        break;
      }
      case QsimMode::dot:
      case QsimMode::euclidean:
      case QsimMode::l1:
      case QsimMode::rbf:
        break;
    }
  }
}

// The matrix entry M_ab of the mode for prepared rows a and b.
inline double entry(const QsimOptions& opt, const double* base, size_t TD, int D, int a, int b) {
  const double* x = base + static_cast<size_t>(a) * D;
  const double* y = base + static_cast<size_t>(b) * D;
  switch (opt.mode) {
    case QsimMode::cosine:
    case QsimMode::dot:
      return dot(x, y, D);
    case QsimMode::pearson: {
      const double r = dot(x, y, D);
      return opt.pearson_official_scaling ? r / D : r;
    }
    case QsimMode::angular:
      return std::acos(std::clamp(dot(x, y, D), -1.0, 1.0)) / std::numbers::pi;
    case QsimMode::euclidean:
      return std::sqrt(sq_dist(x, y, D));
    case QsimMode::l1:
      return l1_dist(x, y, D);
    case QsimMode::rbf:
      return std::exp(-sq_dist(x, y, D) / (2.0 * opt.rbf_sigma * opt.rbf_sigma));
    case QsimMode::kl: {
      const double* lx = base + TD + static_cast<size_t>(a) * D;
      const double* ly = base + TD + static_cast<size_t>(b) * D;
      double s = 0;
      for (int d = 0; d < D; ++d) s += (x[d] - y[d]) * (lx[d] - ly[d]);
      return 0.5 * s;
    }
  }
  return 0.0;
}

void check_rows(const HeadRows& rows) {
  if (rows.n_rows < 0 || rows.dim < 1)
    throw Error("q-similarity: bad shape (" + std::to_string(rows.n_rows) + " rows of dim " +
                std::to_string(rows.dim) + ")");
  if (rows.n_rows > 0 && rows.data == nullptr) throw Error("q-similarity: null data");
}

double qsim_head_impl(const HeadRows& rows, const QsimOptions& opt, std::vector<double>& scratch) {
  check_rows(rows);
  const int T = rows.n_rows, D = rows.dim;
  if (T <= 1) return 0.0;
  const double pairs = static_cast<double>(T) * (T - 1);  // ordered off-diagonal pairs

  if (opt.mode == QsimMode::cosine && opt.cosine_fast_path) {
    // Σ_{a≠b} q̂_a·q̂_b = ‖Σ_t q̂_t‖² − Σ_t ‖q̂_t‖²: one pass, D + 1 accumulators. The subtracted
    // term is the matrix trace (not T: a zero vector contributes 0 to it, as in the official code).
    scratch.assign(static_cast<size_t>(D), 0.0);
    double trace = 0;
    for (int t = 0; t < T; ++t) {
      const float* src = rows.row(t);
      double n2 = 0;
      for (int d = 0; d < D; ++d) n2 += static_cast<double>(src[d]) * src[d];
      const double inv = 1.0 / std::max(std::sqrt(n2), kQsimNormEps);
      double h2 = 0;
      for (int d = 0; d < D; ++d) {
        const double x = src[d] * inv;
        scratch[d] += x;
        h2 += x * x;
      }
      trace += h2;
    }
    return (dot(scratch.data(), scratch.data(), D) - trace) / pairs;
  }

  prepare(rows, opt, scratch);
  const size_t TD = static_cast<size_t>(T) * D;
  double sum = 0;
  for (int a = 0; a < T; ++a) {
    double row_sum = 0;  // per-row partial sums keep the accumulation error ~O(log) rather than O(T²)
    for (int b = a + 1; b < T; ++b) row_sum += entry(opt, scratch.data(), TD, D, a, b);
    sum += row_sum;
  }
  return 2.0 * sum / pairs;
}

double qsim_lag_head_impl(const HeadRows& rows, int lag, const QsimOptions& opt, std::vector<double>& scratch) {
  check_rows(rows);
  if (lag < 1) throw Error("q-similarity: lag must be >= 1 (got " + std::to_string(lag) + ")");
  const int T = rows.n_rows, D = rows.dim;
  if (T <= lag) return 0.0;
  prepare(rows, opt, scratch);
  const size_t TD = static_cast<size_t>(T) * D;
  double sum = 0;
  for (int t = 0; t + lag < T; ++t) sum += entry(opt, scratch.data(), TD, D, t, t + lag);
  return sum / (T - lag);
}

void check_layer(int n_rows, int n_heads, int head_dim) {
  if (n_rows < 0 || n_heads < 1 || head_dim < 1)
    throw Error("q-similarity: bad layer shape (" + std::to_string(n_rows) + " rows, " +
                std::to_string(n_heads) + " heads of dim " + std::to_string(head_dim) + ")");
}

void check_windows(const WindowSpec& spec) {
  if (spec.window < 1 || spec.stride < 1)
    throw Error("q-similarity: window and stride must be >= 1 (got window " + std::to_string(spec.window) +
                ", stride " + std::to_string(spec.stride) + ")");
}

// Window [start, start + length) list for T rows.
std::vector<WindowQsim> window_list(int T, const WindowSpec& spec) {
  std::vector<WindowQsim> w;
  for (int start = 0; start < T; start += spec.stride) {
    const int len = std::min(spec.window, T - start);
    if (len < spec.window && !spec.keep_partial) break;
    w.push_back({start, len, 0.0});
    if (spec.stride > T - start) break;  // no overflow on the next increment
  }
  return w;
}

}  // namespace

std::string_view mode_name(QsimMode mode) { return kModeNames[static_cast<size_t>(mode)]; }

QsimMode parse_mode(std::string_view name) {
  for (size_t i = 0; i < kModeNames.size(); ++i)
    if (kModeNames[i] == name) return kAllQsimModes[i];
  std::string msg = "unknown q-similarity mode '" + std::string(name) + "' (expected one of:";
  for (std::string_view n : kModeNames) msg += " " + std::string(n);
  throw Error(msg + ")");
}

bool is_similarity(QsimMode mode) {
  switch (mode) {
    case QsimMode::cosine:
    case QsimMode::dot:
    case QsimMode::rbf:
    case QsimMode::pearson:
      return true;
    case QsimMode::euclidean:
    case QsimMode::l1:
    case QsimMode::angular:
    case QsimMode::kl:
      return false;
  }
  return true;
}

HeadRows HeadRows::slice(int first, int count) const {
  assert(first >= 0 && count >= 0 && first + count <= n_rows);
  return HeadRows{count > 0 ? row(first) : data, count, dim, stride};
}

HeadRows head_rows(const float* buf, int n_rows, int n_heads, int head_dim, int head) {
  check_layer(n_rows, n_heads, head_dim);
  if (head < 0 || head >= n_heads)
    throw Error("q-similarity: head " + std::to_string(head) + " out of range (" + std::to_string(n_heads) +
                " heads)");
  if (n_rows > 0 && buf == nullptr) throw Error("q-similarity: null buffer");
  const std::ptrdiff_t stride = static_cast<std::ptrdiff_t>(n_heads) * head_dim;
  return HeadRows{buf ? buf + static_cast<std::ptrdiff_t>(head) * head_dim : nullptr, n_rows, head_dim, stride};
}

int kv_head_of(int head, int n_head, int n_head_kv) {
  if (n_head < 1 || n_head_kv < 1 || n_head % n_head_kv != 0)
    throw Error("GQA: " + std::to_string(n_head) + " query heads are not a multiple of " +
                std::to_string(n_head_kv) + " KV heads");
  if (head < 0 || head >= n_head)
    throw Error("GQA: head " + std::to_string(head) + " out of range (" + std::to_string(n_head) + " heads)");
  return head / (n_head / n_head_kv);
}

double qsim_head(const HeadRows& rows, const QsimOptions& opt) {
  std::vector<double> scratch;
  return qsim_head_impl(rows, opt, scratch);
}

double qsim_lag_head(const HeadRows& rows, int lag, const QsimOptions& opt) {
  std::vector<double> scratch;
  return qsim_lag_head_impl(rows, lag, opt, scratch);
}

LayerQsim qsim_layer(const float* buf, int n_rows, int n_heads, int head_dim, const QsimOptions& opt) {
  check_layer(n_rows, n_heads, head_dim);
  LayerQsim out;
  out.per_head.resize(static_cast<size_t>(n_heads));
  std::vector<double> scratch;
  double sum = 0;
  for (int h = 0; h < n_heads; ++h) {
    out.per_head[h] = qsim_head_impl(head_rows(buf, n_rows, n_heads, head_dim, h), opt, scratch);
    sum += out.per_head[h];
  }
  out.mean = sum / n_heads;
  return out;
}

LayerQsim qsim_lag_layer(const float* buf, int n_rows, int n_heads, int head_dim, int lag, const QsimOptions& opt) {
  check_layer(n_rows, n_heads, head_dim);
  LayerQsim out;
  out.per_head.resize(static_cast<size_t>(n_heads));
  std::vector<double> scratch;
  double sum = 0;
  for (int h = 0; h < n_heads; ++h) {
    out.per_head[h] = qsim_lag_head_impl(head_rows(buf, n_rows, n_heads, head_dim, h), lag, opt, scratch);
    sum += out.per_head[h];
  }
  out.mean = sum / n_heads;
  return out;
}

std::vector<WindowQsim> qsim_windows_head(const HeadRows& rows, const WindowSpec& spec, const QsimOptions& opt) {
  check_rows(rows);
  check_windows(spec);
  std::vector<WindowQsim> w = window_list(rows.n_rows, spec);
  std::vector<double> scratch;
  for (WindowQsim& x : w) x.value = qsim_head_impl(rows.slice(x.start, x.length), opt, scratch);
  return w;
}

std::vector<WindowQsim> qsim_windows_layer(const float* buf, int n_rows, int n_heads, int head_dim,
                                           const WindowSpec& spec, const QsimOptions& opt) {
  check_layer(n_rows, n_heads, head_dim);
  check_windows(spec);
  std::vector<WindowQsim> w = window_list(n_rows, spec);
  std::vector<double> scratch;
  for (WindowQsim& x : w) {
    double sum = 0;
    for (int h = 0; h < n_heads; ++h)
      sum += qsim_head_impl(head_rows(buf, n_rows, n_heads, head_dim, h).slice(x.start, x.length), opt, scratch);
    x.value = sum / n_heads;
  }
  return w;
}

double mean_over_windows(std::span<const WindowQsim> windows) {
  if (windows.empty()) return 0.0;
  double s = 0;
  for (const WindowQsim& w : windows) s += w.value;
  return s / static_cast<double>(windows.size());
}

}  // namespace tappa::analysis
