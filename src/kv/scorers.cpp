// Token scorers: see scorers.h and docs/KV_COMPRESSION.md.
// GCC 12 reports a false -Wmaybe-uninitialized inside _mm512_reduce_add_ps when vec.h's dot_f32 is
// inlined here; silence it for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kv/scorers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend/cpu/vec.h"
#include "tappa/error.h"

namespace tappa::kv {

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("kv: " + what); }

void require(bool ok, const char* what) {
  if (!ok) fail(what);
}

void check_out(std::span<float> out, size_t want, const char* who) {
  if (out.size() != want)
    fail(std::string(who) + ": output has " + std::to_string(out.size()) + " floats, expected " +
         std::to_string(want));
}

int group_size(int n_head, int n_head_kv) {
  require(n_head > 0 && n_head_kv > 0 && n_head % n_head_kv == 0,
          "query heads must be a positive multiple of KV heads");
  return n_head / n_head_kv;
}

// softmax over x[0..n) in place: fp32 exp, double normaliser (as cpu::softmax).
void softmax_inplace(float* x, int n) {
  if (n <= 0) return;
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

// One attention row: query `qrow` of window row a (of R) against the N keys of one KV head, with
// the corner mask of size M. Writes N floats.
void attention_row(const float* qrow, const HeadsView& k, int kv, int a, int R, int M, float scale, float* out) {
  const int N = k.n_rows;
  // Visible keys: rows above the corner (a < R−M) see all N; corner rows see up to N−M+(a−(R−M)).
  int visible = N;
  if (a >= R - M) visible = N - M + (a - (R - M)) + 1;
  const float* kb = k.head(kv);
  for (int j = 0; j < visible; ++j) out[j] = cpu::dot_f32(qrow, kb + j * k.row_stride, k.dim) * scale;
  softmax_inplace(out, visible);
  for (int j = visible; j < N; ++j) out[j] = 0.0f;
}

void check_qk(const HeadsView& q, const HeadsView& k, int causal_block, int& M) {
  require(q.dim == k.dim && q.dim > 0, "window attention: query and key dims differ");
  group_size(q.n_heads, k.n_heads);
  require(q.n_rows >= 1 && q.n_rows <= k.n_rows, "window attention: need 1 <= query rows <= keys");
  M = causal_block < 0 ? q.n_rows : causal_block;
  require(M <= q.n_rows, "window attention: causal block larger than the query rows");
}

// Pools each query head's row-aggregate and averages the group: the common tail of every
// attention scorer. `agg(h, dst)` writes head h's P raw scores into dst.
template <class Agg>
void pooled_group_mean(int n_head, int n_head_kv, int n_prefix, const PoolOptions& pool, std::span<float> out,
                       Agg&& agg) {
  const int G = group_size(n_head, n_head_kv);
  const int P = n_prefix;
  if (P <= 0) return;
  std::vector<float> raw(P), pooled(P);
  std::vector<double> acc(P);
  for (int kv = 0; kv < n_head_kv; ++kv) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int g = 0; g < G; ++g) {
      agg(kv * G + g, raw.data());
      const float* src = raw.data();
      if (pool.kind != Pooling::none) {
        pool1d(raw.data(), P, pool, pooled.data());
        src = pooled.data();
      }
      for (int j = 0; j < P; ++j) acc[j] += src[j];
    }
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * P;
    for (int j = 0; j < P; ++j) o[j] = static_cast<float>(acc[j] / G);
  }
}

void check_attention(const AttentionView& a, int n_head_kv, int n_prefix, std::span<float> out, const char* who) {
  require(a.data != nullptr || a.n_head * a.n_rows * a.n_keys == 0, "attention view without data");
  require(a.n_rows >= 1, "attention scorer: need at least one row");
  require(n_prefix >= 0 && n_prefix <= a.n_keys, "attention scorer: prefix longer than the keys");
  group_size(a.n_head, n_head_kv);
  check_out(out, static_cast<size_t>(n_head_kv) * std::max(n_prefix, 0), who);
}

// splitmix64 finaliser.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Rotates the pairs of x (dim floats, only the first n_rot) by per-pair (c, s):
// (x_a, x_b) → (c·x_a − s·x_b, s·x_a + c·x_b).
void rotate_pairs(const RopeSpec& rope, const double* cs, double* x) {
  const int half = rope.n_rot / 2;
  for (int i = 0; i < half; ++i) {
    const int ia = rope.neox ? i : 2 * i;
    const int ib = rope.neox ? i + half : 2 * i + 1;
    const double c = cs[2 * i], s = cs[2 * i + 1];
    const double x0 = x[ia], x1 = x[ib];
    x[ia] = c * x0 - s * x1;
    x[ib] = s * x0 + c * x1;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

HeadsView HeadsView::rows(int first, int count) const {
  require(first >= 0 && count >= 0 && first + count <= n_rows, "HeadsView::rows out of range");
  HeadsView v = *this;
  v.n_rows = count;
  v.row0 = row0 + first;
  return v;
}

HeadsView HeadsView::head_major(const float* data, int n_heads, int n_rows, int dim) {
  HeadsView v;
  v.data = data;
  v.head_stride = static_cast<std::ptrdiff_t>(n_rows) * dim;
  v.n_heads = n_heads;
  v.n_rows = n_rows;
  v.dim = dim;
  v.row_stride = dim;
  return v;
}

HeadsView HeadsView::token_major(const float* data, int n_rows, int n_heads, int dim) {
  HeadsView v;
  v.data = data;
  v.head_stride = dim;
  v.n_heads = n_heads;
  v.n_rows = n_rows;
  v.dim = dim;
  v.row_stride = static_cast<std::ptrdiff_t>(n_heads) * dim;
  return v;
}

HeadsView HeadsView::per_head(const float* const* heads, int n_heads, int n_rows, int dim) {
  HeadsView v;
  v.heads = heads;
  v.n_heads = n_heads;
  v.n_rows = n_rows;
  v.dim = dim;
  v.row_stride = dim;
  return v;
}

// ---------------------------------------------------------------------------------------------

void window_attention(const HeadsView& q, const HeadsView& k, std::span<float> out, int causal_block) {
  int M = 0;
  check_qk(q, k, causal_block, M);
  const int H = q.n_heads, R = q.n_rows, N = k.n_rows;
  check_out(out, static_cast<size_t>(H) * R * N, "window_attention");
  const int G = H / k.n_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.dim));
  for (int h = 0; h < H; ++h)
    for (int a = 0; a < R; ++a)
      attention_row(q.row(h, a), k, h / G, a, R, M, scale, out.data() + (static_cast<std::ptrdiff_t>(h) * R + a) * N);
}

void window_attention_group(const HeadsView& q, const HeadsView& k, int kv, std::span<float> out, int causal_block) {
  int M = 0;
  check_qk(q, k, causal_block, M);
  require(kv >= 0 && kv < k.n_heads, "window_attention_group: KV head out of range");
  const int R = q.n_rows, N = k.n_rows, G = q.n_heads / k.n_heads;
  check_out(out, static_cast<size_t>(G) * R * N, "window_attention_group");
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.dim));
  for (int g = 0; g < G; ++g)
    for (int a = 0; a < R; ++a)
      attention_row(q.row(kv * G + g, a), k, kv, a, R, M, scale,
                    out.data() + (static_cast<std::ptrdiff_t>(g) * R + a) * N);
}

// ---------------------------------------------------------------------------------------------

void pool1d(const float* in, int n, const PoolOptions& pool, float* out) {
  if (pool.kind == Pooling::none) {
    std::copy(in, in + n, out);
    return;
  }
  if (pool.kernel < 1 || pool.kernel % 2 == 0)
    fail("pooling kernel must be odd and positive, got " + std::to_string(pool.kernel));
  const int r = pool.kernel / 2;
  if (pool.kind == Pooling::avg) {
    // Direct window sums in double (kernels are small); the divisor is always the kernel, so
    // zero padding counts.
    for (int j = 0; j < n; ++j) {
      double t = 0.0;
      for (int i = std::max(0, j - r); i <= std::min(n - 1, j + r); ++i) t += in[i];
      out[j] = static_cast<float>(t / pool.kernel);
    }
  } else {
    for (int j = 0; j < n; ++j) {
      float m = -std::numeric_limits<float>::infinity();
      for (int i = std::max(0, j - r); i <= std::min(n - 1, j + r); ++i) m = std::max(m, in[i]);
      out[j] = m;
    }
  }
}

// ---------------------------------------------------------------------------------------------

void snapkv_scores(const AttentionView& a, int n_head_kv, int n_prefix, const PoolOptions& pool,
                   std::span<float> out, bool mean_rows) {
  check_attention(a, n_head_kv, n_prefix, out, "snapkv_scores");
  const int R = a.n_rows, P = n_prefix;
  std::vector<double> s(std::max(P, 0));
  pooled_group_mean(a.n_head, n_head_kv, P, pool, out, [&](int h, float* dst) {
    std::fill(s.begin(), s.end(), 0.0);
    for (int r = 0; r < R; ++r) {
      const float* row = a.row(h, r);
      for (int j = 0; j < P; ++j) s[j] += row[j];
    }
    const double div = mean_rows ? R : 1.0;
    for (int j = 0; j < P; ++j) dst[j] = static_cast<float>(s[j] / div);
  });
}

void cake_scores(const AttentionView& a, int n_head_kv, int n_prefix, double gamma, const PoolOptions& pool,
                 std::span<float> out) {
  check_attention(a, n_head_kv, n_prefix, out, "cake_scores");
  const int R = a.n_rows, P = n_prefix;
  std::vector<double> mean(std::max(P, 0)), ss(std::max(P, 0));
  pooled_group_mean(a.n_head, n_head_kv, P, pool, out, [&](int h, float* dst) {
    std::fill(mean.begin(), mean.end(), 0.0);
    std::fill(ss.begin(), ss.end(), 0.0);
    for (int r = 0; r < R; ++r) {
      const float* row = a.row(h, r);
      for (int j = 0; j < P; ++j) mean[j] += row[j];
    }
    for (int j = 0; j < P; ++j) mean[j] /= R;
    if (R > 1) {
      for (int r = 0; r < R; ++r) {
        const float* row = a.row(h, r);
        for (int j = 0; j < P; ++j) {
          const double d = row[j] - mean[j];
          ss[j] += d * d;
        }
      }
    }
    for (int j = 0; j < P; ++j) {
      const double var = R > 1 ? ss[j] / (R - 1) : 0.0;
      dst[j] = static_cast<float>(mean[j] + gamma * var);
    }
  });
}

void h2o_scores(const AttentionView& a, int n_head_kv, int n_prefix, std::span<float> out) {
  snapkv_scores(a, n_head_kv, n_prefix, PoolOptions{Pooling::none, 1}, out, false);
}

void h2o_scores_streaming(const HeadsView& q, const HeadsView& k, int n_prefix, std::span<float> out,
                          int causal_block) {
  int M = 0;
  check_qk(q, k, causal_block, M);
  require(n_prefix >= 0 && n_prefix <= k.n_rows, "h2o_scores_streaming: prefix longer than the keys");
  const int H = q.n_heads, H_kv = k.n_heads, G = H / H_kv, R = q.n_rows, N = k.n_rows, P = n_prefix;
  check_out(out, static_cast<size_t>(H_kv) * P, "h2o_scores_streaming");
  if (P == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.dim));
  std::vector<float> row(N);
  std::vector<double> acc(P);
  for (int kv = 0; kv < H_kv; ++kv) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int g = 0; g < G; ++g) {
      const int h = kv * G + g;
      for (int a = 0; a < R; ++a) {
        attention_row(q.row(h, a), k, kv, a, R, M, scale, row.data());
        for (int j = 0; j < P; ++j) acc[j] += row[j];
      }
    }
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * P;
    for (int j = 0; j < P; ++j) o[j] = static_cast<float>(acc[j] / G);
  }
}

void h2o_scores_from_accumulated(const float* acc, int n_head, int n_head_kv, std::ptrdiff_t acc_stride,
                                 int n_prefix, std::span<float> out) {
  const int G = group_size(n_head, n_head_kv);
  require(n_prefix >= 0, "h2o_scores_from_accumulated: negative prefix");
  check_out(out, static_cast<size_t>(n_head_kv) * n_prefix, "h2o_scores_from_accumulated");
  if (n_prefix == 0) return;
  require(acc != nullptr, "h2o_scores_from_accumulated: no accumulated attention");
  for (int kv = 0; kv < n_head_kv; ++kv) {
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * n_prefix;
    for (int j = 0; j < n_prefix; ++j) {
      double s = 0.0;
      for (int g = 0; g < G; ++g) s += acc[(kv * G + g) * acc_stride + j];
      o[j] = static_cast<float>(s / G);
    }
  }
}

// ---------------------------------------------------------------------------------------------

void streamingllm_scores(int n_head_kv, int n_prefix, int n_sink, std::span<float> out, bool keep_first) {
  require(n_head_kv >= 1 && n_prefix >= 0 && n_sink >= 0, "streamingllm_scores: bad shape");
  check_out(out, static_cast<size_t>(n_head_kv) * n_prefix, "streamingllm_scores");
  const int P = n_prefix;
  for (int kv = 0; kv < n_head_kv; ++kv) {
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * P;
    for (int j = 0; j < P; ++j) {
      if (keep_first)
        o[j] = static_cast<float>(P - j);
      else
        o[j] = j < n_sink ? static_cast<float>(P + n_sink - j) : static_cast<float>(j);
    }
  }
}

void knorm_scores(const HeadsView& keys, int n_prefix, std::span<float> out) {
  require(n_prefix >= 0 && n_prefix <= keys.n_rows, "knorm_scores: prefix longer than the keys");
  check_out(out, static_cast<size_t>(keys.n_heads) * n_prefix, "knorm_scores");
  for (int kv = 0; kv < keys.n_heads; ++kv) {
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * n_prefix;
    for (int j = 0; j < n_prefix; ++j) {
      const float* k = keys.row(kv, j);
      double s = 0.0;
      for (int i = 0; i < keys.dim; ++i) s += static_cast<double>(k[i]) * k[i];
      o[j] = static_cast<float>(-std::sqrt(s));
    }
  }
}

void random_scores(uint64_t seed, int layer, int n_head_kv, int n_prefix, std::span<float> out) {
  require(n_head_kv >= 1 && n_prefix >= 0, "random_scores: bad shape");
  check_out(out, static_cast<size_t>(n_head_kv) * n_prefix, "random_scores");
  for (int kv = 0; kv < n_head_kv; ++kv) {
    const uint64_t base = mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(layer)) ^ static_cast<uint64_t>(kv));
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * n_prefix;
    for (int j = 0; j < n_prefix; ++j) {
      const uint64_t r = mix64(base ^ static_cast<uint64_t>(j));
      o[j] = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // 24 random bits: exact in fp32
    }
  }
}

// ---------------------------------------------------------------------------------------------

void average_rotation(const RopeSpec& rope, int64_t pos0, int n_future, double* cs_out) {
  const int half = rope.n_rot / 2;
  for (int i = 0; i < half; ++i) {
    double c = 0.0, s = 0.0;
    const double th = rope.inv_freq[i];
    for (int p = 0; p < n_future; ++p) {
      const double ang = static_cast<double>(pos0 + p) * th;
      c += std::cos(ang);
      s += std::sin(ang);
    }
    cs_out[2 * i] = n_future > 0 ? c / n_future : 1.0;
    cs_out[2 * i + 1] = n_future > 0 ? s / n_future : 0.0;
  }
}

void expected_attention_scores(const HeadsView& q, const HeadsView& keys, const HeadsView& values,
                               const RopeSpec& rope, int n_prefix, const ExpectedAttentionOptions& opt,
                               std::span<float> out) {
  const int H = q.n_heads, H_kv = keys.n_heads, d = keys.dim, N = keys.n_rows, P = n_prefix;
  const int G = group_size(H, H_kv);
  require(q.dim == d, "expected_attention_scores: query and key dims differ");
  require(!opt.use_vnorm || (values.n_heads == H_kv && values.n_rows >= N),
          "expected_attention_scores: values must match the keys");
  require(P >= 0 && P <= N, "expected_attention_scores: prefix longer than the keys");
  require(rope.n_rot >= 0 && rope.n_rot <= d && rope.n_rot % 2 == 0 &&
              static_cast<int>(rope.inv_freq.size()) >= rope.n_rot / 2,
          "expected_attention_scores: bad RoPE spec");
  require(opt.n_sink >= 0 && opt.n_future >= 0, "expected_attention_scores: bad options");
  check_out(out, static_cast<size_t>(H_kv) * P, "expected_attention_scores");
  if (P == 0) return;

  const int half = rope.n_rot / 2;
  const int64_t fpos0 = opt.future_pos0 >= 0 ? opt.future_pos0 : N;
  std::vector<double> avg_cs(2 * half);
  average_rotation(rope, fpos0, opt.n_future, avg_cs.data());

  const int n_sink_keys = std::min(opt.n_sink, N);
  const int n_live = N - n_sink_keys;  // keys the softmax runs over
  // Query rows used for the statistics: positions ≥ n_sink.
  int first_row = 0;
  if (opt.query_pos0 < opt.n_sink)
    first_row = static_cast<int>(std::min<int64_t>(opt.n_sink - opt.query_pos0, q.n_rows));
  const int R = q.n_rows - first_row;

  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> mu(d), x(d), cov(opt.use_covariance ? static_cast<size_t>(d) * d : 0), cs(2 * half),
      tmp(d);
  std::vector<float> mu_f(d), cov_f(opt.use_covariance ? static_cast<size_t>(d) * d : 0), kt(d);
  std::vector<float> logits(std::max(n_live, 0));
  std::vector<double> acc(std::max(n_live, 0));
  std::vector<float> all_scores(static_cast<size_t>(H_kv) * std::max(n_live, 0));

  // Loads row r of head h as a pre-RoPE double vector (de-rotating post-RoPE rows exactly).
  auto load = [&](int h, int r, double* dst) {
    const float* src = q.row(h, first_row + r);
    for (int i = 0; i < d; ++i) dst[i] = src[i];
    if (opt.queries_post_rope && half > 0) {
      const double pos = static_cast<double>(opt.query_pos0 + first_row + r);
      for (int i = 0; i < half; ++i) {
        const double ang = -pos * rope.inv_freq[i];
        cs[2 * i] = std::cos(ang);
        cs[2 * i + 1] = std::sin(ang);
      }
      rotate_pairs(rope, cs.data(), dst);
    }
  };

  for (int kv = 0; kv < H_kv; ++kv) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int g = 0; g < G; ++g) {
      const int h = kv * G + g;
      // Statistics.
      std::fill(mu.begin(), mu.end(), 0.0);
      for (int r = 0; r < R; ++r) {
        load(h, r, x.data());
        for (int i = 0; i < d; ++i) mu[i] += x[i];
      }
      if (R > 0)
        for (int i = 0; i < d; ++i) mu[i] /= R;
      if (opt.use_covariance) {
        std::fill(cov.begin(), cov.end(), 0.0);
        for (int r = 0; r < R; ++r) {
          load(h, r, x.data());
          for (int i = 0; i < d; ++i) x[i] -= mu[i];
          for (int i = 0; i < d; ++i) {
            const double xi = x[i];
            double* ci = cov.data() + static_cast<size_t>(i) * d;
            for (int j = i; j < d; ++j) ci[j] += xi * x[j];
          }
        }
        for (int i = 0; i < d; ++i)
          for (int j = i; j < d; ++j) {
            const double v = R > 0 ? cov[static_cast<size_t>(i) * d + j] / R : 0.0;
            cov[static_cast<size_t>(i) * d + j] = v;
            cov[static_cast<size_t>(j) * d + i] = v;
          }
      }
      // Averaged rotation: μ' = R̄μ, Σ' = R̄ΣR̄ᵀ (columns, then rows).
      rotate_pairs(rope, avg_cs.data(), mu.data());
      if (opt.use_covariance) {
        for (int c = 0; c < d; ++c) {  // R̄ Σ: rotate every column
          for (int i = 0; i < d; ++i) tmp[i] = cov[static_cast<size_t>(i) * d + c];
          rotate_pairs(rope, avg_cs.data(), tmp.data());
          for (int i = 0; i < d; ++i) cov[static_cast<size_t>(i) * d + c] = tmp[i];
        }
        for (int r = 0; r < d; ++r)  // (R̄Σ) R̄ᵀ: rotate every row
          rotate_pairs(rope, avg_cs.data(), cov.data() + static_cast<size_t>(r) * d);
        for (size_t i = 0; i < cov.size(); ++i) cov_f[i] = static_cast<float>(cov[i]);
      }
      for (int i = 0; i < d; ++i) mu_f[i] = static_cast<float>(mu[i]);

      // Logits over the live keys, softmax, accumulate the group mean.
      for (int j = 0; j < n_live; ++j) {
        const float* k = keys.row(kv, n_sink_keys + j);
        double l = cpu::dot_f32(mu_f.data(), k, d) * inv_sqrt_d;
        if (opt.use_covariance) {
          double quad = 0.0;
          for (int i = 0; i < d; ++i) quad += static_cast<double>(k[i]) * cpu::dot_f32(cov_f.data() + static_cast<size_t>(i) * d, k, d);
          l += quad / (2.0 * d);
        }
        logits[j] = static_cast<float>(l);
      }
      softmax_inplace(logits.data(), n_live);
      for (int j = 0; j < n_live; ++j) acc[j] += logits[j];
    }
    float* s = all_scores.data() + static_cast<size_t>(kv) * n_live;
    for (int j = 0; j < n_live; ++j) {
      double v = acc[j] / G;
      if (opt.use_vnorm) {
        const float* vr = values.row(kv, n_sink_keys + j);
        double nn = 0.0;
        for (int i = 0; i < values.dim; ++i) nn += static_cast<double>(vr[i]) * vr[i];
        v = (v + opt.epsilon) * std::sqrt(nn);
      }
      s[j] = static_cast<float>(v);
    }
  }
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : all_scores) mx = std::max(mx, v);
  if (!std::isfinite(mx)) mx = 1.0f;  // no live keys: sinks only
  for (int kv = 0; kv < H_kv; ++kv) {
    float* o = out.data() + static_cast<std::ptrdiff_t>(kv) * P;
    const float* s = all_scores.data() + static_cast<size_t>(kv) * n_live;
    for (int j = 0; j < P; ++j) o[j] = j < n_sink_keys ? mx : s[j - n_sink_keys];
  }
}

}  // namespace tappa::kv
