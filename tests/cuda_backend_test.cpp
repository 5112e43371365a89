// The CUDA backend op by op against the reference backend (backend/reference) on random inputs of
// awkward shapes, ragged caches included. Skips, saying why, in a build without -DTAPPA_CUDA=ON or on
// a machine without a usable GPU.
//
// Tolerances (relative, ‖cuda − ref‖ / ‖ref‖ over the whole output unless said otherwise):
// - fp32 arithmetic in another order (RMSNorm, elementwise, products of few rows, decode
//   attention, whose keys and values are given already rounded to bfloat16 so both backends hold the
//   same numbers): fp32 rounding over at most a few thousand terms, ~1e-6; we allow 1e-5.
// - products of many rows (cuBLAS on bfloat16 activations) and the tensor-core prefill attention
//   (bfloat16 queries and probabilities): one bfloat16 rounding of an input (2^-9 relative) averaged
//   over long sums, ~2e-3; we allow 1e-2. A wrong index, mask or scale gives errors of order 1.
// - RoPE, embedding, argmax, the cache's row operations: the same arithmetic, exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kv/host_kv_cache.h"
#include "model/random_weights.h"
#include "tappa/error.h"

namespace tappa::backend {
namespace {

std::unique_ptr<Backend> cuda_or_skip(std::string& why) {
  try {
    return make_backend("cuda", 1);
  } catch (const Error& e) {
    why = e.what();
    return nullptr;
  }
}

#define CUDA_BACKEND_OR_SKIP(var)                                   \
  std::string why_;                                                 \
  auto var = cuda_or_skip(why_);                                    \
  if (!var) GTEST_SKIP() << "CUDA backend not available: " << why_

float bf16_round(float f) {
  const uint16_t b = random_weights::to_bf16_bits(f);
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

struct Rng {
  std::mt19937_64 g{12345};
  float uni(float a = 1.0f) { return std::uniform_real_distribution<float>(-a, a)(g); }
  std::vector<float> vec(size_t n, float a = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = uni(a);
    return v;
  }
};

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
    if (!std::isfinite(a[i])) return INFINITY;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// A matrix in a backend's memory, from and to host rows.
struct Dev {
  Buffer buf;
  Mat m;
  Dev(Backend& be, int64_t rows, int64_t cols, const std::vector<float>& host, int64_t ld = 0) {
    ld = ld ? ld : cols;
    buf = be.alloc(static_cast<size_t>(rows * ld));
    m = Mat{buf.data(), rows, cols, ld};
    if (!host.empty()) be.upload(host.data(), m);
  }
  std::vector<float> get(Backend& be) const {
    std::vector<float> h(static_cast<size_t>(m.rows * m.cols));
    be.download(m, h.data());
    return h;
  }
};

// A BF16 weight matrix in host memory (the format the CUDA backend keeps).
struct Weights {
  std::vector<uint16_t> bits;
  WeightView view;
  Weights(Rng& r, int64_t rows, int64_t cols) : bits(static_cast<size_t>(rows * cols)) {
    const float a = std::sqrt(3.0f / cols);
    for (uint16_t& b : bits) b = random_weights::to_bf16_bits(r.uni(a));
    view = WeightView{TensorType::BF16, reinterpret_cast<const uint8_t*>(bits.data()), rows, cols};
  }
};

TEST(CudaBackend, ElementwiseAndNorms) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  Rng r;
  const int64_t rows = 7, cols = 577;
  const std::vector<float> w = r.vec(cols), bias = r.vec(cols), x = r.vec(rows * cols, 3.0f), x2 = r.vec(rows * cols);
  const VectorView vv[2] = {{w.data(), cols}, {bias.data(), cols}};
  cu->prepare_weights({}, vv);
  auto run = [&](Backend& be, int op) {
    Dev a(be, rows, cols, x, cols + 3), b(be, rows, cols, x2);  // a has a leading dimension > cols
    switch (op) {
      case 0: be.rms_norm(a.m, w.data(), 1e-5f, a.m); break;
      case 1: be.add_bias(a.m, bias.data()); break;
      case 2: be.add(a.m, b.m); break;
      case 3: be.scale(a.m, 0.37f); break;
      case 4: be.softcap(a.m, 2.5f); break;
      case 5: be.glu(a.m, b.m, FfnActivation::Silu); break;
      case 6: be.glu(a.m, b.m, FfnActivation::GeluTanh); break;
    }
    return a.get(be);
  };
  const char* names[] = {"rms_norm", "add_bias", "add", "scale", "softcap", "glu silu", "glu gelu"};
  for (int op = 0; op < 7; ++op) {
    const double e = rel_err(run(*cu, op), run(*ref, op));
    std::printf("[cuda parity] %-10s rel err %.3g\n", names[op], e);
    EXPECT_LT(e, 1e-5) << names[op];
  }
}

TEST(CudaBackend, EmbedAndArgmax) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  Rng r;
  Weights table(r, 301, 96);
  const WeightView mats[1] = {table.view};
  cu->prepare_weights(mats, {});
  const std::vector<int32_t> toks = {5, 300, 0, 17, 17, 123};
  auto run = [&](Backend& be) {
    Dev x(be, 6, 96, {});
    be.embed(table.view, toks, 1.5f, x.m);
    return x.get(be);
  };
  EXPECT_EQ(run(*cu), run(*ref));
  // argmax: ties go to the first index.
  std::vector<float> logits = r.vec(4 * 1000);
  logits[1 * 1000 + 10] = logits[1 * 1000 + 900] = 5.0f;
  logits[3 * 1000 + 999] = 7.0f;
  Dev lg(*cu, 4, 1000, logits);
  int32_t ids[4], want[4];
  cu->argmax_rows(lg.m, ids);
  ref->argmax_rows(Mat{logits.data(), 4, 1000, 1000}, want);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ids[i], want[i]) << "row " << i;
  EXPECT_EQ(ids[1], 10);
  EXPECT_EQ(ids[3], 999);
}

TEST(CudaBackend, Rope) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  Rng r;
  const int HD = 64, H = 3;
  std::vector<float> factors(HD / 2);
  for (float& f : factors) f = 1.0f + std::fabs(r.uni(4.0f));
  const std::vector<int64_t> pos = {0, 1, 7, 4095, 70000};
  for (bool neox : {false, true})
    for (bool ff : {false, true}) {
      Rope rope{HD, HD, 500000.0f, 0.5f, ff ? factors.data() : nullptr, neox, nullptr};
      const std::vector<float> x = r.vec(pos.size() * H * HD);
      const std::vector<float> k = r.vec(pos.size() * 2 * HD);
      auto run = [&](Backend& be, bool fused) {
        Dev t(be, pos.size(), HD, {}), v(be, pos.size(), H * HD, x), kd(be, pos.size(), 2 * HD, k);
        be.rope_table(rope, pos, t.m);
        if (fused) {
          be.rope_qk(rope, t.m, v.m, H, kd.m, 2);
        } else {
          be.rope(rope, t.m, v.m, H);
          be.rope(rope, t.m, kd.m, 2);
        }
        auto out = v.get(be);
        const auto ko = kd.get(be);
        out.insert(out.end(), ko.begin(), ko.end());
        return out;
      };
      const auto b = run(*ref, false);
      EXPECT_EQ(run(*cu, false), b) << "neox " << neox << " factors " << ff;
      EXPECT_EQ(run(*cu, true), b) << "fused, neox " << neox << " factors " << ff;
    }
}

TEST(CudaBackend, Matmul) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  Rng r;
  const int64_t K = 520, N = 333, N2 = 77;
  Weights w(r, N, K), w2(r, N2, K), wg(r, N, K), wu(r, N, K);
  const WeightView mats[4] = {w.view, w2.view, wg.view, wu.view};
  cu->prepare_weights(mats, {});
  for (int64_t M : {1, 3, 4, 5, 16, 64}) {
    const std::vector<float> x = r.vec(M * K), y0 = r.vec(M * N);
    const double tol = M <= 4 ? 1e-5 : 1e-2;  // up to 4 rows: fp32 GEMV; more: cuBLAS on bf16 activations
    auto run = [&](Backend& be, int op) {
      Dev xd(be, M, K, x), y(be, M, N, y0), y2(be, M, N2, {}), tmp(be, M, N, {}), up(be, M, N, {});
      std::vector<float> out;
      if (op == 0) be.matmul(w.view, xd.m, y.m, Order::PerToken);
      if (op == 1) {
        const WeightView* ws[2] = {&w.view, &w2.view};
        const Mat ys[2] = {y.m, y2.m};
        be.matmul_many(ws, xd.m, ys, Order::Batch);
        out = y2.get(be);
      }
      if (op == 2) be.matmul_add(w.view, xd.m, y.m, tmp.m, Order::Batch);
      if (op == 3) be.matmul_glu(wg.view, wu.view, xd.m, y.m, up.m, FfnActivation::Silu, Order::Batch);
      if (op == 4) be.matmul_glu(wg.view, wu.view, xd.m, y.m, up.m, FfnActivation::GeluTanh, Order::Batch);
      const auto yo = y.get(be);
      out.insert(out.end(), yo.begin(), yo.end());
      return out;
    };
    const char* names[] = {"matmul", "matmul_many", "matmul_add", "glu silu", "glu gelu"};
    for (int op = 0; op < 5; ++op) {
      const double e = rel_err(run(*cu, op), run(*ref, op));
      std::printf("[cuda parity] %-11s M=%-3lld rel err %.3g\n", names[op], static_cast<long long>(M), e);
      EXPECT_LT(e, tol) << names[op] << " M=" << M;
    }
  }
  // Order::PerToken (promised for up to 4 rows): a row computed in a batch of 4 equals the row
  // computed alone, bit for bit.
  const std::vector<float> x = r.vec(4 * K);
  Dev xd(*cu, 4, K, x), y(*cu, 4, N, {});
  cu->matmul(w.view, xd.m, y.m, Order::PerToken);
  const auto all = y.get(*cu);
  for (int i = 0; i < 4; ++i) {
    Dev x1(*cu, 1, K, std::vector<float>(x.begin() + i * K, x.begin() + (i + 1) * K)), y1(*cu, 1, N, {});
    cu->matmul(w.view, x1.m, y1.m, Order::PerToken);
    const auto one = y1.get(*cu);
    EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + i * N)) << "row " << i;
  }
}

// One activation row: the GEMV's weight rows per warp (TAPPA_CUDA_GEMV_R = 2, 4, 8 for products,
// TAPPA_CUDA_GEMV_GLU_R = 2, 4 for the gate/up pair; gemv.cu) change the speed, never the bits: every
// choice sums each output in the same order. Shapes: Llama-3.1-8B's QKV (6144 × 4096), a row count
// that no choice divides with a tail past the unrolled loop (333 × 4104), and a short one.
TEST(CudaBackend, GemvRowsPerWarpSameBits) {
  CUDA_BACKEND_OR_SKIP(cu);
  Rng r;
  struct Shape { int64_t n, k; };
  for (const Shape sh : {Shape{6144, 4096}, Shape{333, 4104}, Shape{4096, 1032}}) {
    Weights w(r, sh.n, sh.k), wu(r, sh.n, sh.k);
    const WeightView mats[2] = {w.view, wu.view};
    const std::vector<float> nw = r.vec(sh.k);
    const VectorView vv[1] = {{nw.data(), sh.k}};
    cu->prepare_weights(mats, vv);
    const std::vector<float> x = r.vec(sh.k), y0 = r.vec(sh.n);
    std::vector<std::vector<float>> outs;
    // Rows per warp; then the L2 lookahead (TAPPA_CUDA_GEMV_PREFETCH, hints only) and the old
    // one-warp write of the fused norm's output (TAPPA_CUDA_GEMV_NORM_OUT=warp0).
    for (const char* rpw : {"", "2", "4", "8", "pf0", "pf1", "pf3", "warp0", "spread"}) {
      const std::string c = rpw;
      const bool rows = !c.empty() && c[0] >= '0' && c[0] <= '9';
      if (rows) setenv("TAPPA_CUDA_GEMV_R", rpw, 1); else unsetenv("TAPPA_CUDA_GEMV_R");
      if (rows && c != "8") setenv("TAPPA_CUDA_GEMV_GLU_R", rpw, 1); else unsetenv("TAPPA_CUDA_GEMV_GLU_R");
      if (c.rfind("pf", 0) == 0) setenv("TAPPA_CUDA_GEMV_PREFETCH", rpw + 2, 1); else unsetenv("TAPPA_CUDA_GEMV_PREFETCH");
      if (c == "warp0" || c == "spread") setenv("TAPPA_CUDA_GEMV_NORM_OUT", rpw, 1); else unsetenv("TAPPA_CUDA_GEMV_NORM_OUT");
      Dev xd(*cu, 1, sh.k, x), y(*cu, 1, sh.n, {}), ya(*cu, 1, sh.n, y0), tmp(*cu, 1, sh.n, {}), yg(*cu, 1, sh.n, {}),
          up(*cu, 1, sh.n, {}), nx(*cu, 1, sh.k, {}), yn(*cu, 1, sh.n, {}), ygn(*cu, 1, sh.n, {}), nx2(*cu, 1, sh.k, {});
      cu->matmul(w.view, xd.m, y.m, Order::PerToken);
      cu->matmul_add(w.view, xd.m, ya.m, tmp.m, Order::PerToken);
      cu->matmul_glu(w.view, wu.view, xd.m, yg.m, up.m, FfnActivation::Silu, Order::PerToken);
      cu->rms_norm(xd.m, nw.data(), 1e-5f, nx.m);  // fused into the product that reads nx
      cu->matmul(w.view, nx.m, yn.m, Order::PerToken);
      cu->rms_norm(xd.m, nw.data(), 1e-5f, nx2.m);
      cu->matmul_glu(w.view, wu.view, nx2.m, ygn.m, up.m, FfnActivation::Silu, Order::PerToken);
      std::vector<float> o;
      for (const Dev* d : {&y, &ya, &yg, &nx, &yn, &nx2, &ygn}) {
        const auto h = d->get(*cu);
        o.insert(o.end(), h.begin(), h.end());
      }
      outs.push_back(std::move(o));
    }
    for (const char* v : {"TAPPA_CUDA_GEMV_R", "TAPPA_CUDA_GEMV_GLU_R", "TAPPA_CUDA_GEMV_PREFETCH", "TAPPA_CUDA_GEMV_NORM_OUT"})
      unsetenv(v);
    for (size_t i = 1; i < outs.size(); ++i)
      EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[i].data(), outs[0].size() * sizeof(float)))
          << "n " << sh.n << " k " << sh.k << ": forced choice " << i << " differs from the default";
  }
}

// Caches of several sequences with different (ragged) list lengths; new rows appended through
// kv_append; attention of each sequence's new rows against the reference.
void attention_case(Backend& cu, Backend& ref, int HD, int n_head_kv, int group, int window,
                    const std::vector<int>& new_rows, bool taps, int extra_before = 0,
                    std::vector<float>* got_out = nullptr) {
  Rng r;
  r.g.seed(HD * 131 + window * 7 + new_rows.size());
  const int H = n_head_kv * group, L = 2;
  const int layer = 1;
  int64_t total_rows = 0;
  for (int n : new_rows) total_rows += n;
  std::vector<std::unique_ptr<KvCache>> cc, rc;
  std::vector<AttentionSeq> cs, rs;
  const std::vector<float> q = r.vec(total_rows * H * HD);
  std::vector<float> k = r.vec(total_rows * n_head_kv * HD), v = r.vec(total_rows * n_head_kv * HD);
  for (float& f : k) f = bf16_round(f);
  for (float& f : v) f = bf16_round(f);
  Dev kd(cu, total_rows, n_head_kv * HD, k), vd(cu, total_rows, n_head_kv * HD, v);
  int64_t row0 = 0;
  for (size_t s = 0; s < new_rows.size(); ++s) {
    cc.push_back(cu.new_cache(L, n_head_kv, HD));
    rc.push_back(ref.new_cache(L, n_head_kv, HD));
    for (int h = 0; h < n_head_kv; ++h) {
      // Ragged: every list its own length (extra_before: long lists, many decode chunks).
      const int before = static_cast<int>((s * 977 + h * 331) % 300) + extra_before;
      std::vector<float> kk = r.vec(static_cast<size_t>(before) * HD), vv = r.vec(static_cast<size_t>(before) * HD);
      for (float& f : kk) f = bf16_round(f);
      for (float& f : vv) f = bf16_round(f);
      for (auto* c : {cc.back().get(), rc.back().get()}) {
        c->reserve_extra(layer, before + new_rows[s]);
        c->append(layer, h, kk.data(), vv.data(), before, HD);
      }
    }
    const int n = new_rows[s];
    cu.kv_append(*cc.back(), layer, kd.m.row_range(row0, n), vd.m.row_range(row0, n));
    Mat kh{k.data() + row0 * n_head_kv * HD, n, n_head_kv * HD, n_head_kv * HD};
    Mat vh{v.data() + row0 * n_head_kv * HD, n, n_head_kv * HD, n_head_kv * HD};
    ref.kv_append(*rc.back(), layer, kh, vh);
    cs.push_back({cc.back().get(), row0, n, static_cast<int>(s)});
    rs.push_back({rc.back().get(), row0, n, static_cast<int>(s)});
    row0 += n;
  }
  struct Collect : AttentionTaps {
    std::vector<std::vector<float>> rows;
    bool wants(int seq, int head, int row) override { return (seq + head + row) % 3 == 0; }
    void on_row(int seq, int head, int row, const float* p, int n) override {
      std::vector<float> v(p, p + n);
      v.push_back(static_cast<float>(seq * 100000 + head * 1000 + row));
      rows.push_back(std::move(v));
    }
  } ct, rt;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  AttentionCall call{layer, H, n_head_kv, HD, scale, window, cs, taps ? &ct : nullptr};
  Dev qd(cu, total_rows, H * HD, q), od(cu, total_rows, H * HD, {});
  cu.attention(call, qd.m, od.m);
  const auto got = od.get(cu);
  if (got_out) *got_out = got;
  std::vector<float> want(got.size());
  AttentionCall rcall{layer, H, n_head_kv, HD, scale, window, rs, taps ? &rt : nullptr};
  ref.attention(rcall, Mat{const_cast<float*>(q.data()), total_rows, H * HD, H * HD}, Mat{want.data(), total_rows, H * HD, H * HD});
  // Rows of long prompts (>= 32 rows, head size 64 or 128) take the tensor-core kernel.
  bool flash = false;
  for (int n : new_rows) flash = flash || (n >= 32 && (HD == 64 || HD == 128));
  const double e = rel_err(got, want), tol = flash ? 1e-2 : 1e-5;
  std::printf("[cuda parity] attention HD %3d kv %d group %d window %2d rows", HD, n_head_kv, group, window);
  for (int n : new_rows) std::printf(" %d", n);
  std::printf(": rel err %.3g%s\n", e, flash ? " (incl. tensor-core rows)" : "");
  EXPECT_LT(e, tol);
  if (taps) {
    auto key = [](const std::vector<float>& a, const std::vector<float>& b) { return a.back() < b.back(); };
    std::sort(ct.rows.begin(), ct.rows.end(), key);
    std::sort(rt.rows.begin(), rt.rows.end(), key);
    ASSERT_EQ(ct.rows.size(), rt.rows.size());
    double worst = 0;
    for (size_t i = 0; i < ct.rows.size(); ++i) {
      ASSERT_EQ(ct.rows[i].size(), rt.rows[i].size());
      for (size_t j = 0; j + 1 < ct.rows[i].size(); ++j) worst = std::max(worst, std::fabs(double(ct.rows[i][j]) - rt.rows[i][j]));
    }
    std::printf("[cuda parity]   taps: %zu rows, max |dp| %.3g\n", ct.rows.size(), worst);
    EXPECT_LT(worst, 1e-5);
  }
}

TEST(CudaBackend, AttentionDecodeRagged) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  for (int HD : {32, 64, 128, 256}) attention_case(*cu, *ref, HD, 2, 4, 0, {1, 1, 3, 1, 7}, true);
  attention_case(*cu, *ref, 64, 3, 3, 0, std::vector<int>(20, 1), false);  // many sequences
  attention_case(*cu, *ref, 128, 2, 4, 9, {1, 5, 1}, true);                 // sliding window
  attention_case(*cu, *ref, 256, 1, 4, 16, {24, 1}, false);                 // gemma-like, short prompt
  // Every group size the chunk kernels are instantiated for (1, 2, ≤4, ≤8), one past it (the
  // one-warp-per-head kernel), and lists of thousands of keys (tens of chunks, idle warps at ends).
  for (int group : {1, 2, 3, 7, 9}) attention_case(*cu, *ref, 128, 2, group, 0, {1, 2, 1}, false, 40 * group);
  attention_case(*cu, *ref, 64, 2, 7, 0, {1, 1}, false, 3000);                // qwen2.5-like
  attention_case(*cu, *ref, 128, 8, 4, 0, {1}, false, 4100);                  // llama-3.1-8b-like
  attention_case(*cu, *ref, 256, 1, 4, 512, {1, 3}, false, 1500);             // long list, window
}

// The decode attention's combine pass fused into the chunk kernel (the last block of a row merges
// its chunks; TAPPA_CUDA_DECODE_COMBINE=fused) gives the bits of the separate combine kernel
// (TAPPA_CUDA_DECODE_COMBINE=separate): the same code sums in the same order.
TEST(CudaBackend, AttentionDecodeFusedCombineSameBits) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  struct Case { int hd, kv, group, window; std::vector<int> rows; int before; };
  for (const Case& c : {Case{128, 8, 4, 0, {1}, 4100}, Case{128, 2, 4, 9, {1, 5, 1}, 0}, Case{64, 2, 7, 0, {1, 1}, 3000},
                        Case{256, 1, 4, 512, {1, 3}, 1500}, Case{128, 2, 1, 0, {1, 2, 1}, 700}}) {
    std::vector<float> fused, separate;
    setenv("TAPPA_CUDA_DECODE_COMBINE", "fused", 1);
    attention_case(*cu, *ref, c.hd, c.kv, c.group, c.window, c.rows, false, c.before, &fused);
    setenv("TAPPA_CUDA_DECODE_COMBINE", "separate", 1);
    attention_case(*cu, *ref, c.hd, c.kv, c.group, c.window, c.rows, false, c.before, &separate);
    unsetenv("TAPPA_CUDA_DECODE_COMBINE");
    ASSERT_EQ(fused.size(), separate.size());
    EXPECT_EQ(0, std::memcmp(fused.data(), separate.data(), fused.size() * sizeof(float)))
        << "head size " << c.hd << " group " << c.group << " window " << c.window;
  }
}

TEST(CudaBackend, AttentionPrefillRagged) {
  CUDA_BACKEND_OR_SKIP(cu);
  auto ref = make_backend("reference", 1);
  for (int HD : {64, 128}) {
    attention_case(*cu, *ref, HD, 2, 4, 0, {100, 1, 33}, true);
    attention_case(*cu, *ref, HD, 4, 2, 0, {257}, false);
    attention_case(*cu, *ref, HD, 2, 1, 37, {130, 64}, false);  // windowed, no grouping
  }
  attention_case(*cu, *ref, 256, 1, 2, 0, {70}, false);  // head size 256: the CUDA-core rows path
}

TEST(CudaBackend, CacheRowOperations) {
  CUDA_BACKEND_OR_SKIP(cu);
  Rng r;
  const int HD = 64, KV = 2, L = 3;
  auto c = cu->new_cache(L, KV, HD);
  HostKvCache h(L, KV, HD);
  auto fill = [&](int layer, int head, int n) {
    std::vector<float> k = r.vec(n * HD), v = r.vec(n * HD);
    for (float& f : k) f = bf16_round(f);
    for (float& f : v) f = bf16_round(f);
    c->reserve_extra(layer, n);
    h.reserve_extra(layer, n);
    c->append(layer, head, k.data(), v.data(), n, HD);
    h.append(layer, head, k.data(), v.data(), n, HD);
  };
  auto same = [&](const KvCache& a, const KvCache& b, const char* what) {
    for (int l = 0; l < L; ++l)
      for (int hh = 0; hh < KV; ++hh) {
        ASSERT_EQ(a.length(l, hh), b.length(l, hh)) << what;
        const int n = a.length(l, hh);
        std::vector<float> ak(n * HD), av(n * HD), bk(n * HD), bv(n * HD);
        a.read(l, hh, 0, n, ak.data(), av.data());
        b.read(l, hh, 0, n, bk.data(), bv.data());
        EXPECT_EQ(ak, bk) << what << " keys l" << l << " h" << hh;
        EXPECT_EQ(av, bv) << what << " values l" << l << " h" << hh;
      }
  };
  for (int l = 0; l < L; ++l)
    for (int hh = 0; hh < KV; ++hh) fill(l, hh, 50 + 31 * l + 7 * hh);
  same(*c, h, "append");
  const std::vector<int> keep = {40, 3, 0, 17, 18, 49, 1};  // any order
  c->keep_rows(1, 0, keep);
  h.keep_rows(1, 0, keep);
  c->keep_last(0, 1, 20);
  h.keep_last(0, 1, 20);
  c->keep_first(2, 1, 33);
  h.keep_first(2, 1, 33);
  same(*c, h, "keep");
  const size_t held = c->bytes_held();
  c->shrink_to_fit();
  EXPECT_LT(c->bytes_held(), held);
  EXPECT_EQ(c->bytes_held(), c->bytes_used());
  same(*c, h, "shrink");
  fill(1, 0, 300);  // grows again after shrinking
  same(*c, h, "grow");
  auto copy = c->clone();
  same(*copy, h, "clone");
  auto other = cu->new_cache(L, KV, HD);
  other->append_from(2, 1, *c, 1, 0, 2, 9);
  std::vector<float> a(9 * HD), b(9 * HD);
  other->read(2, 1, 0, 9, a.data(), nullptr);
  h.read(1, 0, 2, 9, b.data(), nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(c->keys(0, 0), nullptr);  // device storage: read() only
}

}  // namespace
}  // namespace tappa::backend
