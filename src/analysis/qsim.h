// q-similarity (and, applied to keys, k-similarity): how alike the query vectors of one head are
// over a window of consecutive tokens. The default reproduces the official TAPPA code
// (KVCache/tappa/tappa_qsim.py::compute_q_sim_torch, PAPER.md §2.1): per head, build the T×T matrix
// M of the chosen mode over the head's T vectors, take the mean of its off-diagonal entries
// (ΣM − trace M)/(T(T−1)), then the mean over heads; T ≤ 1 gives 0.
//
// Inputs are views into row-major activation buffers [T][H*D] as the observer delivers them
// (tappa::LayerQk): head h's vector of token t starts at t*H*D + h*D. Keys use the same functions
// with H = n_head_kv (GQA): k-similarity is qsim_* on k_pre / k_post.
//
// Numerics: inputs are fp32, every sum is accumulated in double. The official code works in the
// model dtype (fp16/bf16/fp32), so agreement with it is to that dtype's precision, not bit-exact.
// Pure functions, deterministic, no global state; each call allocates at most one scratch buffer
// of T*D doubles (the layer helpers reuse one across heads).
#pragma once
#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

namespace tappa::analysis {

enum class QsimMode {
  cosine,     // q̂_a·q̂_b, q̂ = q / max(‖q‖, 1e-8)                      (similarity; the one TAPPA uses)
  dot,        // q_a·q_b                                                (similarity, unnormalised)
  euclidean,  // ‖q_a − q_b‖₂                                           (distance)
  l1,         // ‖q_a − q_b‖₁                                           (distance)
  rbf,        // exp(−‖q_a − q_b‖² / (2σ²))                             (similarity; ≈0 for raw LLM queries)
  pearson,    // cosine of the mean-centred vectors = Pearson r          (similarity; official code: r / D)
  angular,    // acos(clamp(cos, −1, 1)) / π                            (distance in [0, 1])
  kl,         // ½ Σ_d (P_a − P_b)(log P_a − log P_b), P = softmax(q)   (divergence)
};

inline constexpr std::array<QsimMode, 8> kAllQsimModes = {
    QsimMode::cosine, QsimMode::dot,     QsimMode::euclidean, QsimMode::l1,
    QsimMode::rbf,    QsimMode::pearson, QsimMode::angular,   QsimMode::kl};

// "cosine", "dot", "euclidean", "l1", "rbf", "pearson", "angular", "kl" (the official names).
std::string_view mode_name(QsimMode mode);
// Inverse of mode_name (exact, lower case); throws tappa::Error listing the valid names otherwise.
QsimMode parse_mode(std::string_view name);
// True when larger values mean "more alike" (cosine, dot, rbf, pearson); false for the distance
// modes (euclidean, l1, angular, kl), where a caller ranking by similarity must negate / use 1 − x.
bool is_similarity(QsimMode mode);

struct QsimOptions {
  QsimMode mode = QsimMode::cosine;
  double rbf_sigma = 1.0;  // σ of the rbf kernel (official default 1)
  double kl_eps = 1e-8;    // kl: softmax probabilities are clamped at this and renormalised
  // pearson: the official code divides the correlation again by D (a quirk: r / D). false (default)
  // gives the true Pearson r; true reproduces the official numbers.
  bool pearson_official_scaling = false;
  // cosine: use mean_{a≠b} q̂_a·q̂_b = (‖Σ q̂‖² − Σ‖q̂‖²)/(T(T−1)), O(T·D) instead of O(T²·D). Exact
  // up to rounding (the subtracted term is the trace, which is < T when some vector is zero).
  // false forces the pairwise path (used by the tests to check the identity).
  bool cosine_fast_path = true;
};

// Norm clamp used by cosine / angular / pearson (official eps).
inline constexpr double kQsimNormEps = 1e-8;

// The T vectors of one head: row t is data[t*stride .. t*stride + dim).
struct HeadRows {
  const float* data = nullptr;
  int n_rows = 0;
  int dim = 0;
  std::ptrdiff_t stride = 0;  // floats between the starts of consecutive rows

  const float* row(int t) const { return data + static_cast<std::ptrdiff_t>(t) * stride; }
  // Rows [first, first + count) (no bounds check beyond an assert).
  HeadRows slice(int first, int count) const;
};

// Head `head` of a row-major [n_rows][n_heads*head_dim] buffer. Throws tappa::Error on a bad shape
// or head index.
HeadRows head_rows(const float* buf, int n_rows, int n_heads, int head_dim, int head);

// The KV head that query head `head` reads under GQA (heads grouped consecutively, as llama.cpp and
// Hugging Face do): head / (n_head / n_head_kv). Throws tappa::Error if n_head % n_head_kv != 0.
int kv_head_of(int head, int n_head, int n_head_kv);

// q-similarity of one head: mean of the mode's matrix over all ordered pairs a ≠ b (the official
// definition; every mode is symmetric, so it is also the mean over unordered pairs). 0 if T ≤ 1.
double qsim_head(const HeadRows& rows, const QsimOptions& opt = {});

// Lagged variant: mean over the T − lag pairs (t, t + lag) of the mode's entry. lag = 1 with cosine
// is the paper's wording ("cosine similarity of consecutive queries"); lag = L gives the seasonal
// self-similarity at period L. 0 if T ≤ lag. Throws tappa::Error if lag < 1.
double qsim_lag_head(const HeadRows& rows, int lag = 1, const QsimOptions& opt = {});

// Per-head values and their mean (the per-layer number of the official code).
struct LayerQsim {
  std::vector<double> per_head;
  double mean = 0.0;
};

// Whole layer, all-pairs definition. For keys pass n_heads = n_head_kv.
LayerQsim qsim_layer(const float* buf, int n_rows, int n_heads, int head_dim, const QsimOptions& opt = {});
// Whole layer, lagged definition.
LayerQsim qsim_lag_layer(const float* buf, int n_rows, int n_heads, int head_dim, int lag = 1,
                         const QsimOptions& opt = {});

// Sliding windows over the T rows: windows start at 0, stride, 2·stride, ...
// keep_partial = false: only full windows (start + window ≤ T); none if T < window.
// keep_partial = true : every start < T, the last ones shortened to T − start — the official pruning
//                       loop (`for start in range(0, len, stride): ids[start:start+max_seq_len]`);
//                       a window of length 1 gives 0 here (the official code divides by zero).
struct WindowSpec {
  int window = 1024;  // official pruning: max_seq_len = 1024
  int stride = 256;   // official pruning: stride = 256
  bool keep_partial = false;
};
struct WindowQsim {
  int start = 0;
  int length = 0;
  double value = 0.0;  // the head's value, or the mean over heads for the layer version
};
// Throws tappa::Error if window < 1 or stride < 1.
std::vector<WindowQsim> qsim_windows_head(const HeadRows& rows, const WindowSpec& spec,
                                          const QsimOptions& opt = {});
std::vector<WindowQsim> qsim_windows_layer(const float* buf, int n_rows, int n_heads, int head_dim,
                                           const WindowSpec& spec, const QsimOptions& opt = {});
// Mean of the window values (the pruning method sums per window and divides by the window count);
// 0 for no windows.
double mean_over_windows(std::span<const WindowQsim> windows);

}  // namespace tappa::analysis
