// cpu::attention_rows against a scalar model of the summation order it promises (attention.cpp's
// header: ggml_vec_dot_f32's q·k, ggml's softmax, tinyBLAS / vec_dot lane order for p·V). The
// vectorised kernel regroups the work (16 keys reduced together, p·V lane by lane with partial sums
// in registers) for speed; these tests require the result to stay bit-identical to the scalar order,
// because that order is what keeps tappa's logits on llama.cpp's (EngineGolden). Any tolerance would
// let a reordering slip through, so the comparison is exact (memcmp of the floats).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/exp_approx.h"
#include "backend/cpu/ops.h"

namespace {

// Pairings of _mm512_reduce_add_ps: (i, i+8), (i, i+4), (i, i+2), (0, 1).
float tree16(const float* v) {
  float t[8], u[4];
  for (int i = 0; i < 8; ++i) t[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; ++i) u[i] = t[i] + t[i + 4];
  return (u[0] + u[2]) + (u[1] + u[3]);
}

float dot_ref(const float* x, const float* y, int n) {
  float a[4][16] = {};
  const int np = n & ~63;
  for (int i = 0; i < np; i += 64)
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 16; ++l) a[k][l] = std::fma(x[i + 16 * k + l], y[i + 16 * k + l], a[k][l]);
  float s[16];
  for (int l = 0; l < 16; ++l) s[l] = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
  float sum = tree16(s);
  for (int i = np; i < n; ++i) sum = std::fma(x[i], y[i], sum);
  return sum;
}

// One head, scalar, in the documented order.
void attention_ref(const tappa::cpu::AttentionRow& a, float* probs, float* out) {
  const int HD = a.head_dim, first = a.first, n = a.n_vis;
  float mx = -INFINITY;
  for (int j = 0; j < first; ++j) probs[j] = 0.0f;
  for (int j = first; j < n; ++j) {
    probs[j] = dot_ref(a.K + static_cast<size_t>(j) * HD, a.q, HD) * a.scale;
    mx = std::max(mx, probs[j]);
  }
  double sum = 0.0;
  for (int c = first & ~15; c < n; c += 16) {
    float chunk[16];
    for (int l = 0; l < 16; ++l) {
      const int j = c + l;
      const bool in = j >= first && j < n;
      chunk[l] = in ? tappa::cpu::exp_approx(probs[j] - mx) : 0.0f;
      if (in) probs[j] = chunk[l];
    }
    sum += static_cast<double>(tree16(chunk));
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int j = first; j < n; ++j) probs[j] *= inv;

  const int lanes = a.single_token ? 64 : 16;
  std::vector<float> acc(static_cast<size_t>(lanes) * HD, 0.0f);
  for (int j = first; j < n; ++j)
    for (int d = 0; d < HD; ++d) {
      float& s = acc[static_cast<size_t>(j % lanes) * HD + d];
      s = std::fma(a.V[static_cast<size_t>(j) * HD + d], probs[j], s);
    }
  for (int d = 0; d < HD; ++d) {
    float l[64];
    for (int r = 0; r < lanes; ++r) l[r] = acc[static_cast<size_t>(r) * HD + d];
    if (lanes == 64) {  // ggml_vec_dot_f32's four accumulators: (a0 + a2) + (a1 + a3)
      for (int r = 0; r < 16; ++r) l[r] = (l[r] + l[r + 32]) + (l[r + 16] + l[r + 48]);
    }
    out[d] = tree16(l);
  }
}

struct Case {
  int n, first, head_dim, group;
  bool single_token;
  float spread = 1.5f;  // sd of K, V and Q: large ones make score gaps of hundreds (exp underflows)
};

void check(const Case& c) {
  std::mt19937 rng(static_cast<unsigned>(c.n * 131 + c.first * 7 + c.head_dim + c.group));
  std::normal_distribution<float> nd(0.0f, c.spread);
  const size_t rows = static_cast<size_t>(c.n) * c.head_dim;
  std::vector<float> K(rows), V(rows), Q(static_cast<size_t>(c.group) * c.head_dim);
  for (float& x : K) x = nd(rng);
  for (float& x : V) x = nd(rng);
  for (float& x : Q) x = nd(rng);
  std::vector<tappa::cpu::AttentionRow> rs(c.group);
  std::vector<float> probs(static_cast<size_t>(c.group) * c.n), out(static_cast<size_t>(c.group) * c.head_dim);
  std::vector<float*> pp(c.group), oo(c.group);
  for (int h = 0; h < c.group; ++h) {
    rs[h] = {Q.data() + h * c.head_dim, K.data(), V.data(), c.first, c.n, c.head_dim, 0.125f + 0.01f * h,
             c.single_token};
    pp[h] = probs.data() + static_cast<size_t>(h) * c.n;
    oo[h] = out.data() + static_cast<size_t>(h) * c.head_dim;
  }
  tappa::cpu::attention_rows(rs.data(), c.group, pp.data(), oo.data());
  for (int h = 0; h < c.group; ++h) {
    std::vector<float> p_ref(c.n), o_ref(c.head_dim);
    attention_ref(rs[h], p_ref.data(), o_ref.data());
    SCOPED_TRACE(::testing::Message() << "n " << c.n << " first " << c.first << " head_dim " << c.head_dim << " group "
                                      << c.group << " single_token " << c.single_token << " head " << h);
    EXPECT_EQ(std::memcmp(p_ref.data(), pp[h], sizeof(float) * c.n), 0) << "softmax weights differ";
    EXPECT_EQ(std::memcmp(o_ref.data(), oo[h], sizeof(float) * c.head_dim), 0) << "output differs";
  }
}

TEST(Attention, BitIdenticalToTheDocumentedOrder) {
  // Lengths around the 16-key score blocks and the 16/64 p·V lanes, windows starting mid-block,
  // head sizes of SmolLM2 (64), Llama/Qwen (128), Gemma 3 (256), two multiples of 16 but not of 64
  // (96, 80: AVX2's register p·V kernel for prompt rows, AVX-512's fma_row path) and one of neither
  // (72: fma_row everywhere), group sizes 1..5 (the register kernels take heads four at a time).
  const Case cases[] = {
      {1, 0, 64, 3, true},     {15, 0, 64, 3, true},    {16, 0, 64, 3, true},   {17, 0, 64, 3, false},
      {63, 0, 64, 1, true},    {64, 0, 64, 2, true},    {65, 0, 64, 3, true},   {300, 0, 64, 3, true},
      {300, 0, 64, 3, false},  {300, 37, 64, 3, true},  {300, 37, 64, 3, false}, {513, 200, 128, 5, true},
      {513, 200, 128, 4, false}, {700, 0, 256, 4, true}, {700, 129, 256, 4, false}, {100, 3, 80, 2, true},
      {100, 3, 80, 2, false},  {1000, 999, 64, 3, true}, {200, 5, 96, 5, false}, {90, 0, 96, 1, true},
      {33, 1, 96, 3, false},   {100, 3, 72, 2, false},  {100, 3, 72, 2, true},
  };
  for (const Case& c : cases) check(c);
}

TEST(Attention, ExtremeScoreGapsStayBitIdentical) {
  // Scores hundreds apart: softmax weights below 2^-126 and exp underflowing to 0, which the AVX2
  // vector exp hands to the scalar form lane by lane (exp_approx.h).
  const Case cases[] = {{300, 0, 64, 3, false, 12.0f}, {300, 7, 64, 3, true, 12.0f}, {129, 0, 128, 2, false, 9.0f}};
  for (const Case& c : cases) check(c);
}

TEST(Attention, SiluMulIsTheScalarFormBitForBit) {
  // silu_mul's vector exp (exp_approx16 / exp_approx8) against the scalar exp_approx, every value,
  // including gates whose exp(-g) leaves the exponent range (|g| > 87) and the vector tail.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  std::vector<float> g(1031), up(g.size()), out(g.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = nd(rng), up[i] = nd(rng);
  const float edges[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 87.0f, -87.0f, 87.4f, -87.4f, 88.8f, -88.8f,
                         100.0f, -100.0f, 150.0f, -150.0f, 200.0f, -200.0f, 1e30f, -1e30f};
  for (size_t i = 0; i < std::size(edges); ++i) g[3 * i + 1] = edges[i];
  tappa::cpu::silu_mul(g.data(), up.data(), out.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    const float want = g[i] / (1.0f + tappa::cpu::exp_approx(0.0f - g[i])) * up[i];
    ASSERT_EQ(std::memcmp(&want, &out[i], sizeof(float)), 0) << "gate " << g[i] << " at " << i << ": " << out[i]
                                                             << " != " << want;
  }
}

}  // namespace
