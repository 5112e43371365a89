// TriAttention scorer (src/kv/triattention.cpp) against the rule written out the slow, obvious way:
// pre-RoPE keys (never rotated or de-rotated here), the query centre μ_f and mean band norm E|q_f|
// per frequency band, the series Σ_f |μ_f||k_f| cos(ω_f Δ + φ_f) + Σ_f (E|q_f| − |μ_f|)|k_f| evaluated
// at every future offset and averaged (or maximised), the maximum over each KV head's query group.
// The scorer instead sees post-RoPE keys and folds the offsets into one averaged rotation, so a wrong
// sign, phase, pairing or position fails here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kv/methods.h"
#include "kv/spec.h"
#include "tappa/error.h"

namespace tappa::kv {
namespace {

struct Case {
  int H = 4, H_kv = 2, d = 8, n_rot = 8, N = 24, R = 24, window = 4;
  bool neox = false;
  int offset_max = 64;
  bool use_max = false, mlr = true;
};

// Channel pair of band i (b = -1: a lone unrotated channel).
std::pair<int, int> pair_of(const Case& c, int i) {
  if (i < c.n_rot / 2) return c.neox ? std::pair{i, i + c.n_rot / 2} : std::pair{2 * i, 2 * i + 1};
  return {c.n_rot + (i - c.n_rot / 2), -1};
}
int n_bands(const Case& c) { return c.n_rot / 2 + (c.d - c.n_rot); }

// Rotates every pair of `row` (d floats) by position pos (what the engine does to keys and queries).
void rope(const Case& c, const std::vector<float>& inv, double pos, float* row) {
  for (int i = 0; i < c.n_rot / 2; ++i) {
    const auto [a, b] = pair_of(c, i);
    const double x = row[a], y = row[b], t = pos * inv[i];
    row[a] = static_cast<float>(x * std::cos(t) - y * std::sin(t));
    row[b] = static_cast<float>(x * std::sin(t) + y * std::cos(t));
  }
}

// The reference scores [H_kv][P] from pre-RoPE queries [H][R][d] and pre-RoPE keys [H_kv][N][d].
std::vector<double> reference(const Case& c, const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& inv) {
  const int P = c.N - c.window, G = c.H / c.H_kv, F = n_bands(c);
  std::vector<double> out(static_cast<size_t>(c.H_kv) * P, -1e300);
  for (int h = 0; h < c.H; ++h) {
    std::vector<double> mre(F, 0), mim(F, 0), am(F, 0);
    for (int r = 0; r < c.R; ++r)
      for (int f = 0; f < F; ++f) {
        const auto [a, b] = pair_of(c, f);
        const float* row = &q[(static_cast<size_t>(h) * c.R + r) * c.d];
        const double x = row[a], y = b >= 0 ? row[b] : 0.0;
        mre[f] += x / c.R;
        mim[f] += y / c.R;
        am[f] += std::hypot(x, y) / c.R;
      }
    const int kv = h / G;
    for (int j = 0; j < P; ++j) {
      const float* key = &k[(static_cast<size_t>(kv) * c.N + j) * c.d];
      double total = 0, best = -1e300;
      int n_off = 0;
      for (int o = 1; o <= c.offset_max; o *= 2, ++n_off) {
        const double delta = static_cast<double>(c.N + o - j);
        double v = 0;
        for (int f = 0; f < F; ++f) {
          const auto [a, b] = pair_of(c, f);
          const double kx = key[a], ky = b >= 0 ? key[b] : 0.0;
          const double w = f < c.n_rot / 2 ? inv[f] : 0.0;
          const double amp = std::hypot(mre[f], mim[f]) * std::hypot(kx, ky);
          // φ = arg(μ · conj(k))
          const double phi = std::atan2(mim[f] * kx - mre[f] * ky, mre[f] * kx + mim[f] * ky);
          v += amp * std::cos(w * delta + phi);
          const double extra = c.mlr ? am[f] - std::hypot(mre[f], mim[f]) : am[f];
          v += extra * std::hypot(kx, ky);
        }
        total += v;
        best = std::max(best, v);
      }
      const double s = c.use_max ? best : total / n_off;
      double& dst = out[static_cast<size_t>(kv) * P + j];
      dst = std::max(dst, s);
    }
  }
  return out;
}

// Runs the registered scorer; `post_rope_queries`: hand the queries rotated (the de-rotation path).
std::vector<float> run(const Case& c, const std::vector<float>& q_pre, const std::vector<float>& k_pre,
                       const std::vector<float>& inv, bool post_rope_queries) {
  std::vector<float> k = k_pre, q = q_pre;
  for (int kv = 0; kv < c.H_kv; ++kv)
    for (int j = 0; j < c.N; ++j) rope(c, inv, j, &k[(static_cast<size_t>(kv) * c.N + j) * c.d]);
  const int qpos0 = c.N - c.R;
  if (post_rope_queries)
    for (int h = 0; h < c.H; ++h)
      for (int r = 0; r < c.R; ++r) rope(c, inv, qpos0 + r, &q[(static_cast<size_t>(h) * c.R + r) * c.d]);
  MethodOptions o;
  o.window = c.window;
  o.extra = {{"tri-offset-max", c.offset_max}, {"tri-max", c.use_max ? 1 : 0}, {"tri-mlr", c.mlr ? 1 : 0}};
  LayerInputs in;
  in.keys = HeadsView::head_major(k.data(), c.H_kv, c.N, c.d);
  const HeadsView qv = HeadsView::head_major(q.data(), c.H, c.R, c.d);
  if (post_rope_queries) {
    in.queries = qv;
  } else {
    in.stat_queries = qv;
    in.stat_pos0 = qpos0;
  }
  in.n_head = c.H;
  in.rope = RopeSpec{std::span<const float>(inv), c.n_rot, c.neox};
  const int P = c.N - c.window;
  std::vector<float> s(static_cast<size_t>(c.H_kv) * P);
  find_scorer("triattention").score(in, o, P, s);
  return s;
}

void check(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> inv(c.n_rot / 2);
  for (int i = 0; i < c.n_rot / 2; ++i) inv[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / c.n_rot));
  // Queries concentrated around a per-head centre (the method's premise), keys anywhere.
  std::vector<float> q(static_cast<size_t>(c.H) * c.R * c.d), k(static_cast<size_t>(c.H_kv) * c.N * c.d);
  std::vector<float> centre(static_cast<size_t>(c.H) * c.d);
  for (float& x : centre) x = 2.0f * nd(rng);
  for (int h = 0; h < c.H; ++h)
    for (int r = 0; r < c.R; ++r)
      for (int i = 0; i < c.d; ++i) q[(static_cast<size_t>(h) * c.R + r) * c.d + i] = centre[h * c.d + i] + 0.5f * nd(rng);
  for (float& x : k) x = nd(rng);
  const std::vector<double> want = reference(c, q, k, inv);
  for (bool post : {false, true}) {
    const std::vector<float> got = run(c, q, k, inv, post);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      // Scores are O(10); the scorer sums in double and rounds once to float (rel. 6e-8), the
      // de-rotated path adds float rounding of the rotated inputs (~1e-6 relative per channel).
      EXPECT_NEAR(got[i], want[i], 1e-4 * (1.0 + std::abs(want[i])))
          << "key " << i << (post ? " (post-RoPE queries)" : " (pre-RoPE queries)");
  }
}

TEST(KvTriAttention, LlamaPairsMeanOverOffsetsMatchesTheSeries) { check(Case{}, 1); }

TEST(KvTriAttention, NeoxPairsMaxOverOffsets) {
  Case c;
  c.neox = true;
  c.use_max = true;
  check(c, 2);
}

TEST(KvTriAttention, PartialRotaryAndNoResidualTerm) {
  Case c;
  c.n_rot = 4;  // channels 4 … 7 are unrotated bands
  c.mlr = false;
  c.offset_max = 1024;
  check(c, 3);
}

TEST(KvTriAttention, FewerQueryRowsThanKeys) {
  Case c;
  c.R = 6;  // the statistics from the window only
  check(c, 4);
}

TEST(KvTriAttention, BadKnobsAreOneLineErrors) {
  for (const char* spec : {"triattention:tri-offset-max=0", "triattention:tri-max=2", "triattention:tri-norm=0.5"}) {
    try {
      parse_spec(spec);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(parse_spec("triattention:tri-offset-max=4096:tri-max=1:tri-norm=1"));
}

}  // namespace
}  // namespace tappa::kv
