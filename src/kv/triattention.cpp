// TriAttention (Mao et al., arXiv 2604.04921; github WeianMao/triattention) as a scorer. Its
// observation: before RoPE, a head's queries concentrate around a fixed centre, so the logit a future
// query at position p gives key j is predicted, per RoPE frequency band f (a rotated channel pair, a
// complex number z = x + iy), by a trigonometric series in the distance Δ = p − j:
//
//   logit(p, j) ≈ Σ_f |μ_f|·|k_f|·cos(ω_f Δ + φ_f)  +  Σ_f (E|q_f| − |μ_f|)·|k_f|
//
// with μ_f = E[q_f] the centre of the pre-RoPE queries, k_f the pre-RoPE key and φ_f = arg(μ_f k̄_f);
// the second sum ("norm term") stands for the part of the queries the centre does not explain. A key
// is scored by that prediction averaged (or maximised) over the future positions p = p0 + o,
// o ∈ {1, 2, 4, …, offset-max}, p0 = the prompt's length; a KV head takes the maximum over its query
// group (optionally of per-head z-scores). The official code reads μ_f and E|q_f| from an offline
// calibration file; here they come from the prompt's own pre-RoPE queries (see docs/KV_COMPRESSION.md).
//
// Evaluation: the cached keys are post-RoPE, k̃_f = k_f·e^{iω_f j}, so |μ_f||k_f|cos(ω_f(p−j) + φ_f) =
// Re(μ_f e^{iω_f p} · conj(k̃_f)); for the mean over offsets the rotation is averaged once per band
// (c̄_f = mean_o e^{iω_f(p0+o)}), O(N·d) per head; the max needs every offset, O(N·d·|O|).
// Channels past n_rot (partial rotary) are 1-D bands with ω = 0.
//
// Spec keys: tri-offset-max (65536), tri-max (0: mean over offsets, 1: max), tri-norm (1: z-score each
// query head's scores before the group max), tri-mlr (1: the norm term uses E|q| − |μ|, 0: E|q|).
#include <algorithm>
#include <cmath>
#include <complex>
#include <string>
#include <vector>

#include "kv/methods.h"
#include "tappa/error.h"

namespace tappa::kv {

namespace {

using cd = std::complex<double>;

// One band of a head: its channels (b < 0: a single unrotated channel) and angular frequency.
struct Band {
  int a = 0, b = -1;
  double omega = 0.0;
};

std::vector<Band> bands_of(const RopeSpec& rope, int dim) {
  std::vector<Band> out;
  const int half = rope.n_rot / 2;
  for (int i = 0; i < half; ++i)
    out.push_back(rope.neox ? Band{i, i + half, rope.inv_freq[i]} : Band{2 * i, 2 * i + 1, rope.inv_freq[i]});
  for (int c = rope.n_rot; c < dim; ++c) out.push_back(Band{c, -1, 0.0});
  return out;
}

cd band_value(const float* row, const Band& f) { return {row[f.a], f.b >= 0 ? row[f.b] : 0.0}; }

class TriAttentionScorer final : public Scorer {
 public:
  std::string_view name() const override { return "triattention"; }
  std::string_view description() const override {
    return "TriAttention: attention predicted from pre-RoPE query centres as a trigonometric series in distance";
  }
  std::vector<std::string_view> extra_keys() const override { return {"tri-offset-max", "tri-max", "tri-norm", "tri-mlr"}; }
  void validate(const MethodOptions& o) const override {
    const double m = o.extra_or("tri-offset-max", 65536);
    if (!(m >= 1 && m <= 1 << 30) || m != std::floor(m))
      throw Error(ErrorCode::bad_input, "tri-offset-max must be a whole number in [1, 2^30]");
    for (const char* k : {"tri-max", "tri-norm", "tri-mlr"}) {
      const double v = o.extra_or(k, 0);
      if (v != 0 && v != 1) throw Error(ErrorCode::bad_input, std::string(k) + " must be 0 or 1");
    }
  }
  void needs(const MethodOptions& o, int n, LayerNeeds& need) const override {
    need.query_rows = std::min(o.window, n);
    need.pre_rope_queries = true;  // the centres; without them the post-RoPE rows are de-rotated
  }

  void score(const LayerInputs& in, const MethodOptions& o, int P, std::span<float> s) const override {
    if (P == 0) return;
    const HeadsView& K = in.keys;
    const bool pre = !in.stat_queries.empty();
    const HeadsView& Q = pre ? in.stat_queries : in.queries;
    const int N = K.n_rows, H_kv = K.n_heads, d = K.dim, R = Q.n_rows;
    if (Q.empty() || Q.dim != d || Q.n_heads % H_kv != 0)
      throw Error(ErrorCode::internal, "triattention: needs query rows of every query head (got " +
                                           std::to_string(Q.n_heads) + " heads of " + std::to_string(R) + " rows)");
    if (in.rope.n_rot > d || static_cast<int>(in.rope.inv_freq.size()) < in.rope.n_rot / 2)
      throw Error(ErrorCode::internal, "triattention: bad RoPE spec");
    const int G = Q.n_heads / H_kv;
    // Positions: key row j sits at key_pos0 + j and the prompt ends at key_pos0 + N (the last query row
    // is the prompt's last token either way).
    const int64_t q_pos0 = pre ? in.stat_pos0 : N - R;
    const int64_t key_pos0 = q_pos0 + R - N;
    const int64_t p0 = key_pos0 + N;
    const bool use_max = o.extra_or("tri-max", 0) != 0, norm = o.extra_or("tri-norm", 0) != 0;
    const bool mlr = o.extra_or("tri-mlr", 1) != 0;
    std::vector<double> offsets;
    for (double v = 1; v <= o.extra_or("tri-offset-max", 65536); v *= 2) offsets.push_back(v);

    const std::vector<Band> bands = bands_of(in.rope, d);
    const int F = static_cast<int>(bands.size());
    std::vector<cd> mu(F), rot(use_max ? offsets.size() * F : F);
    std::vector<double> absmean(F), extra(F), head(P);
    // The rotation the score applies to μ: the offsets' mean, or each offset.
    for (int f = 0; f < F; ++f) {
      const double w = bands[f].omega;
      if (use_max) {
        for (size_t t = 0; t < offsets.size(); ++t) rot[t * F + f] = std::polar(1.0, w * static_cast<double>(p0 + offsets[t]));
      } else {
        cd m = 0;
        for (double off : offsets) m += std::polar(1.0, w * static_cast<double>(p0 + off));
        rot[f] = m / static_cast<double>(offsets.size());
      }
    }
    for (int kv = 0; kv < H_kv; ++kv) {
      float* dst = s.data() + static_cast<std::ptrdiff_t>(kv) * P;
      std::fill(dst, dst + P, -INFINITY);
      for (int g = 0; g < G; ++g) {
        const int h = kv * G + g;
        // Centre and mean band norm of the head's pre-RoPE queries.
        std::fill(mu.begin(), mu.end(), cd(0));
        std::fill(absmean.begin(), absmean.end(), 0.0);
        for (int r = 0; r < R; ++r) {
          const float* q = Q.row(h, r);
          for (int f = 0; f < F; ++f) {
            cd z = band_value(q, bands[f]);
            if (!pre) z *= std::polar(1.0, -bands[f].omega * static_cast<double>(q_pos0 + r));  // undo RoPE
            mu[f] += z;
            absmean[f] += std::abs(z);
          }
        }
        for (int f = 0; f < F; ++f) {
          mu[f] /= R;
          absmean[f] /= R;
          extra[f] = mlr ? absmean[f] - std::abs(mu[f]) : absmean[f];
        }
        for (int j = 0; j < P; ++j) {
          const float* k = K.row(kv, j);
          double add = 0.0;
          for (int f = 0; f < F; ++f) add += extra[f] * std::abs(band_value(k, bands[f]));
          double best = -INFINITY;
          const size_t n_rot_sets = use_max ? offsets.size() : 1;
          for (size_t t = 0; t < n_rot_sets; ++t) {
            double v = 0.0;
            for (int f = 0; f < F; ++f) v += std::real(mu[f] * rot[t * F + f] * std::conj(band_value(k, bands[f])));
            best = std::max(best, v);
          }
          head[j] = best + add;
        }
        if (norm) {  // z-score over the prefix keys (population std, floored as the official code does)
          double m = 0.0, v = 0.0;
          for (double x : head) m += x;
          m /= P;
          for (double x : head) v += (x - m) * (x - m);
          const double sd = std::max(std::sqrt(v / P), 1e-6);
          for (double& x : head) x = (x - m) / sd;
        }
        for (int j = 0; j < P; ++j) dst[j] = std::max(dst[j], static_cast<float>(head[j]));
      }
    }
  }
};

}  // namespace

const Scorer& triattention_scorer() {
  static const TriAttentionScorer s;
  return s;
}

}  // namespace tappa::kv
