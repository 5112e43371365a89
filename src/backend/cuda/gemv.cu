// Products of a few activation rows with a bf16 weight matrix (decoding: the weights are read once
// per step, so their bytes over the memory bandwidth is the time to beat).
//
// Each warp owns R weight rows (R output features; for the GLU, R / 2 features' gate and up rows);
// its lanes stream them in 16-byte pieces (8 weights), 16 pieces per lane in flight over the R rows,
// and multiply them with every activation row in fp32. One output's
// sum runs in a fixed order (pieces ascending per lane, then a butterfly over the lanes) that does
// not depend on how many activation rows the call has, so a sequence's logits in a batch equal its
// logits alone (Order::PerToken). Activations are read as fp32 through the L1 cache: they are a few
// kilobytes that every warp of the SM shares.
#include "backend/cuda/kernels.cuh"
#include "tappa/error.h"

#include <cstdlib>
#include <string>

namespace tappa::cuda {

namespace {

constexpr int kWarps = 4;
// 16-byte pieces per lane in flight: kUnroll per weight row, R rows per warp (kInFlight = kUnroll · R).
constexpr int kInFlight = 16;

struct GemvArgs {
  GemvSeg seg[3];
  int blocks[3];  // blocks of each segment
  int n_seg;
  const float* x;
  int64_t ldx;
  int m, k;
  GemvNorm norm;  // NORM kernels: x is the norm's input
  int pf_ahead;      // rounds of weights asked into L2 ahead of their loads (0: none; see gemv_prefetch_rounds)
  int norm_out_one;  // 1: warp 0 of block 0 alone writes norm.out (the old tail; TAPPA_CUDA_GEMV_NORM_OUT=warp0)
};

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// The two weights of a 32-bit word as floats (element 0 in the low half).
template <bool F16>
__device__ __forceinline__ float2 pair(uint32_t u) {
  if constexpr (F16) {
    __half2 h;
    __builtin_memcpy(&h, &u, 4);
    return __half22float2(h);
  } else {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xFFFF0000u));
  }
}

// Eight weights of a 16-byte piece as floats.
template <bool F16>
__device__ __forceinline__ void unpack(uint4 w, float* f) {
  const float2 a = pair<F16>(w.x), b = pair<F16>(w.y), c = pair<F16>(w.z), d = pair<F16>(w.w);
  f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y, f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}

// acc += w[0..8) · x[0..8), in element order.
__device__ __forceinline__ float dot8(const float* w, const float4 a, const float4 b, float acc) {
  acc = __fmaf_rn(w[0], a.x, acc);
  acc = __fmaf_rn(w[1], a.y, acc);
  acc = __fmaf_rn(w[2], a.z, acc);
  acc = __fmaf_rn(w[3], a.w, acc);
  acc = __fmaf_rn(w[4], b.x, acc);
  acc = __fmaf_rn(w[5], b.y, acc);
  acc = __fmaf_rn(w[6], b.z, acc);
  acc = __fmaf_rn(w[7], b.w, acc);
  return acc;
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ float gelu_tanh(float g) {
  const float k = 0.7978845608028654f;
  return 0.5f * g * (1.0f + tanhf(k * g * (1.0f + 0.044715f * g * g)));
}

// R weight rows per warp: consecutive output features (Store / Accumulate), or for GLU row r of the
// gate and of the up projection (one output feature).
// NORM: y = RMSNorm(x) · Wᵀ with the norm fused in. Every warp reads all of x for its dot products
// anyway; it sums the squares as it goes (double), multiplies x by the norm's weights, and scales
// the finished sums by 1 / rms: y = s · Σ W·(x∘w) instead of Σ W·((x·s)∘w), the same value up to
// fp32 rounding. Warp 0 of block 0 also writes the normalized rows to norm.out, as rms_norm would.
template <int MAXM, int R, GemvMode MODE, bool F16, bool NORM>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const GemvArgs a) {
  constexpr int kUnroll = kInFlight / R;
  int b = blockIdx.x, s = 0;
  while (s + 1 < a.n_seg && b >= a.blocks[s]) b -= a.blocks[s++];
  const GemvSeg& g = a.seg[s];
  constexpr bool kGlu = MODE == GemvMode::GluSilu || MODE == GemvMode::GluGelu;
  constexpr int kOut = kGlu ? R / 2 : R;  // output features per warp
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int f0 = (b * kWarps + warp) * kOut;
  if (f0 >= g.n) {
    pdl_wait();
    return;
  }
  const uint16_t* w[R];  // 2-byte weights (bf16 or fp16)
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (kGlu) {  // rows 2j and 2j + 1: the gate's and the up projection's row of feature f0 + j
      const int f = min(f0 + r / 2, g.n - 1);
      w[r] = static_cast<const uint16_t*>(r % 2 == 0 ? g.w : g.w2) + static_cast<int64_t>(f) * a.k;
    } else {
      const int f = min(f0 + r, g.n - 1);  // past the end: recompute the last row, store nothing
      w[r] = static_cast<const uint16_t*>(g.w) + static_cast<int64_t>(f) * a.k;
    }
  }
  float acc[R][MAXM];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MAXM; ++m) acc[r][m] = 0.0f;
  double ss[MAXM];
#pragma unroll
  for (int m = 0; m < MAXM; ++m) ss[m] = 0.0;
  // Activation row m's piece c (8 floats), normalized-but-unscaled under NORM.
  const auto load_x = [&](int m, int c, float4& x0, float4& x1, const float4& n0, const float4& n1) {
    const float4* xp = reinterpret_cast<const float4*>(a.x + m * a.ldx + static_cast<int64_t>(c) * 8);
    x0 = __ldg(xp), x1 = __ldg(xp + 1);
    if constexpr (NORM) {
      ss[m] += static_cast<double>(x0.x * x0.x) + static_cast<double>(x0.y * x0.y) + static_cast<double>(x0.z * x0.z) +
               static_cast<double>(x0.w * x0.w) + static_cast<double>(x1.x * x1.x) + static_cast<double>(x1.y * x1.y) +
               static_cast<double>(x1.z * x1.z) + static_cast<double>(x1.w * x1.w);
      x0.x *= n0.x, x0.y *= n0.y, x0.z *= n0.z, x0.w *= n0.w;
      x1.x *= n1.x, x1.y *= n1.y, x1.z *= n1.z, x1.w *= n1.w;
    }
  };
  const auto load_n = [&](int c, float4& n0, float4& n1) {
    if constexpr (NORM) {
      const float4* np = reinterpret_cast<const float4*>(a.norm.w + static_cast<int64_t>(c) * 8);
      n0 = __ldg(np), n1 = __ldg(np + 1);
    }
  };

  const int pieces = a.k / 8;
  int c = lane;
  // L2 lookahead (a hint; the loads and sums are the same with or without it): lane r < R asks the
  // next a.pf_ahead rounds of its weight row r into L2 (one bulk prefetch of a round's contiguous
  // 32 · kUnroll pieces), so the DRAM keeps working while the warp computes a round (a launch of
  // one wave, QKV or o, otherwise loads, waits and computes in lockstep).
  const uint16_t* my_row = w[0];
#pragma unroll
  for (int r = 1; r < R; ++r)
    if (lane == r) my_row = w[r];
  const int64_t row_bytes = static_cast<int64_t>(a.k) * 2;
  constexpr int kRoundBytes = 32 * kUnroll * 16;
  const auto prefetch_round = [&](int rd) {
    const int64_t off = static_cast<int64_t>(rd) * kRoundBytes;
    if (lane < R && off < row_bytes)
      l2_prefetch(reinterpret_cast<const char*>(my_row) + off, static_cast<uint32_t>(row_bytes - off < kRoundBytes ? row_bytes - off : kRoundBytes));
  };
  for (int rd = 1; rd <= a.pf_ahead; ++rd) prefetch_round(rd);
  int round = 0;
  // The first pieces' weight loads go out before pdl_wait (common.cuh): weights are constants,
  // written when the model was loaded (copies, and random_fill kernels followed by a synchronize),
  // so they may be fetched while the previous kernel still runs. x and y only after the wait.
  bool waited = false;
  // kUnroll pieces per lane in flight; the last round's pieces past the row's end are left out
  // (a guard per piece, not a one-piece-at-a-time tail loop: a row of 3584 weights, Qwen2.5-7B's,
  // is 448 pieces, 3.5 rounds of 128 at R = 4). Each lane still takes its pieces in ascending order.
  for (; c < pieces; c += 32 * kUnroll) {
    uint4 wv[kUnroll][R];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c + 32 * u < pieces) wv[u][r] = load_stream(w[r] + static_cast<int64_t>(c + 32 * u) * 8);
    if (a.pf_ahead > 0) prefetch_round(round + a.pf_ahead);  // rounds 1 .. pf_ahead went out above
    ++round;
    if (!waited) {
      pdl_wait();
      waited = true;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (c + 32 * u >= pieces) break;
      float wf[R][8];
#pragma unroll
      for (int r = 0; r < R; ++r) unpack<F16>(wv[u][r], wf[r]);
      float4 n0, n1;
      load_n(c + 32 * u, n0, n1);
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m < a.m) {
          float4 x0, x1;
          load_x(m, c + 32 * u, x0, x1, n0, n1);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][m] = dot8(wf[r], x0, x1, acc[r][m]);
        }
      }
    }
  }
  if (!waited) pdl_wait();  // a lane with no piece (k < 256)
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MAXM; ++m)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], o);
  if constexpr (NORM) {
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      if (m >= a.m) continue;
      double t = ss[m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
      const float sc = 1.0f / sqrtf(static_cast<float>(t / static_cast<double>(a.k)) + a.norm.eps);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r][m] *= sc;
      if (a.norm.out && a.norm_out_one) {
        if (blockIdx.x == 0 && warp == 0) {
          const float* xr = a.x + m * a.ldx;
          float* o = a.norm.out + m * a.norm.ldo;
          for (int j = lane; j < a.k; j += 32) o[j] = xr[j] * sc * a.norm.w[j];
        }
      } else if (a.norm.out && s == 0) {
        // Spread over the first segment's warps, 256 values each (the same products, the same
        // bits): one warp writing all k values was a tail of ~k / 32 dependent steps after its sums.
        const int ws = b * kWarps + warp, live = (g.n + kOut - 1) / kOut, slices = (a.k + 255) / 256;
        const float* xr = a.x + m * a.ldx;
        float* o = a.norm.out + m * a.norm.ldo;
        for (int sl = ws; sl < slices; sl += live) {
          float xv[8], nv[8];
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            const int j = sl * 256 + t * 32 + lane;
            xv[t] = j < a.k ? xr[j] : 0.0f;
            nv[t] = j < a.k ? a.norm.w[j] : 0.0f;
          }
#pragma unroll
          for (int t = 0; t < 8; ++t) {
            const int j = sl * 256 + t * 32 + lane;
            if (j < a.k) o[j] = xv[t] * sc * nv[t];
          }
        }
      }
    }
  }
  // Lane m writes activation row m's outputs (every lane holds every sum after the butterfly).
#pragma unroll
  for (int m = 0; m < MAXM; ++m) {
    if (m >= a.m || lane != m % 32) continue;
    float* y = g.y + m * g.ldy;
    if (kGlu) {
#pragma unroll
      for (int o = 0; o < kOut; ++o) {
        if (f0 + o >= g.n) break;
        const float gate = acc[2 * o][m], up = acc[2 * o + 1][m];
        y[f0 + o] = (MODE == GemvMode::GluGelu ? gelu_tanh(gate) : silu(gate)) * up;
      }
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (f0 + r >= g.n) break;
        if (MODE == GemvMode::Accumulate) {
          y[f0 + r] += acc[r][m];
        } else {
          y[f0 + r] = acc[r][m];
        }
      }
    }
  }
}

template <int MAXM, int R, GemvMode MODE>
auto pick_kernel(bool f16, bool norm) {
  if constexpr (MODE != GemvMode::Accumulate) {
    if (norm) return f16 ? gemv_kernel<MAXM, R, MODE, true, true> : gemv_kernel<MAXM, R, MODE, false, true>;
  }
  return f16 ? gemv_kernel<MAXM, R, MODE, true, false> : gemv_kernel<MAXM, R, MODE, false, false>;
}

template <int MAXM, int R, GemvMode MODE>
int blocks_for(GemvArgs& a) {
  constexpr bool kGlu = MODE == GemvMode::GluSilu || MODE == GemvMode::GluGelu;
  constexpr int kOut = kGlu ? R / 2 : R;
  int total = 0;
  for (int i = 0; i < a.n_seg; ++i) {
    a.blocks[i] = (a.seg[i].n + kWarps * kOut - 1) / (kWarps * kOut);
    total += a.blocks[i];
  }
  return total;
}

template <int MAXM, int R, GemvMode MODE>
void launch_r(GemvArgs& a, bool f16, bool norm, cudaStream_t s) {
  const int total = blocks_for<MAXM, R, MODE>(a);
  launch(pick_kernel<MAXM, R, MODE>(f16, norm), total, kWarps * 32, 0, s, a);
}

// Weight rows per warp. Every choice sums each output in the same order (pieces ascending per lane,
// then the butterfly), so R changes the speed, never the bits. For one activation row (decoding one
// sequence) more rows per warp are faster: at the Llama-3.1-8B shape, batch 1, 4K context, on the
// H200 (docs/PERFORMANCE.md, 2026-12-04, three calls), 4 rows against 2: +4.2 %, +1.5 %, +0.7 %
// (Qwen2.5-7B +0.4 %); 8 rows −2.5 %, 1 row −9 %; the GLU's 2 features (4 rows) against 1: +1.2 %,
// +0.6 % (Qwen2.5-7B +2.1 %). More activation rows keep 2 (registers: R · MAXM sums). TAPPA_CUDA_GEMV_R (2|4|8) and
// TAPPA_CUDA_GEMV_GLU_R (2|4: rows of gate and up, 2 per feature) force it, read at every call so
// that a test can compare the choices in one process (a getenv, ~100 ns, against microseconds).
constexpr int kRowsOneToken = 4, kGluRowsOneToken = 4;

int forced_rows(const char* name) {
  const char* v = std::getenv(name);
  const int r = v ? std::atoi(v) : 0;
  return r == 2 || r == 4 || r == 8 ? r : 0;
}

template <int MAXM, GemvMode MODE>
void dispatch_r(GemvArgs& a, bool f16, bool norm, cudaStream_t s) {
  constexpr bool kGlu = MODE == GemvMode::GluSilu || MODE == GemvMode::GluGelu;
  if constexpr (MAXM == 1 && !kGlu) {
    const int f = forced_rows("TAPPA_CUDA_GEMV_R");
    const int r = f ? f : kRowsOneToken;
    if (r == 4) return launch_r<1, 4, MODE>(a, f16, norm, s);
    if (r == 8) return launch_r<1, 8, MODE>(a, f16, norm, s);
  }
  if constexpr (MAXM == 1 && kGlu) {
    const int f = forced_rows("TAPPA_CUDA_GEMV_GLU_R");
    if ((f ? f : kGluRowsOneToken) == 4) return launch_r<1, 4, MODE>(a, f16, norm, s);
  }
  launch_r<MAXM, 2, MODE>(a, f16, norm, s);
}

template <GemvMode MODE>
void dispatch_m(GemvArgs& a, bool f16, bool norm, cudaStream_t s) {
  static_assert(kGemvMaxRows == 4);
  if (a.m <= 1) return dispatch_r<1, MODE>(a, f16, norm, s);
  if (a.m <= 2) return dispatch_r<2, MODE>(a, f16, norm, s);
  return dispatch_r<4, MODE>(a, f16, norm, s);
}

// Rounds of weights asked into L2 ahead of their loads (TAPPA_CUDA_GEMV_PREFETCH=N, 0 off; read at
// every call like TAPPA_CUDA_GEMV_R). A hint only: the bits are the same for every N.
constexpr int kPrefetchRounds = 0;
// The fused RMSNorm's normalized output written by many warps (spread) instead of warp 0 of block 0
// (warp0): +1.0–1.4 % at batch 1 on an H100, 2026-12-07 (docs/PERFORMANCE.md).
constexpr bool kNormOutSpread = true;
int gemv_prefetch_rounds() {
  const char* v = std::getenv("TAPPA_CUDA_GEMV_PREFETCH");
  const int n = v ? std::atoi(v) : kPrefetchRounds;
  return n < 0 ? 0 : n > 8 ? 8 : n;
}
bool norm_out_one_warp() {
  // TAPPA_CUDA_GEMV_NORM_OUT=warp0 | spread (the default: kNormOutSpread).
  const char* v = std::getenv("TAPPA_CUDA_GEMV_NORM_OUT");
  if (v && std::string(v) == "warp0") return true;
  if (v && std::string(v) == "spread") return false;
  return !kNormOutSpread;
}

}  // namespace

bool gemv_fits(const float* x, int64_t ldx, int k) {
  return k % 8 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

void gemv(const GemvSeg* segs, int n_seg, GemvMode mode, bool f16, const float* x, int64_t ldx, int m, int k,
          cudaStream_t s, const GemvNorm* norm) {
  if (m == 0) return;
  if (norm && mode == GemvMode::Accumulate) throw Error("gemv: no fused norm for accumulating products");
  GemvArgs a{};
  if (norm) a.norm = *norm;
  a.n_seg = n_seg;
  for (int i = 0; i < n_seg; ++i) a.seg[i] = segs[i];
  a.x = x;
  a.ldx = ldx;
  a.m = m;
  a.k = k;
  a.pf_ahead = gemv_prefetch_rounds();
  a.norm_out_one = norm_out_one_warp();
  switch (mode) {
    case GemvMode::Store: return dispatch_m<GemvMode::Store>(a, f16, norm != nullptr, s);
    case GemvMode::Accumulate: return dispatch_m<GemvMode::Accumulate>(a, f16, false, s);
    case GemvMode::GluSilu: return dispatch_m<GemvMode::GluSilu>(a, f16, norm != nullptr, s);
    case GemvMode::GluGelu: return dispatch_m<GemvMode::GluGelu>(a, f16, norm != nullptr, s);
  }
}

}  // namespace tappa::cuda
