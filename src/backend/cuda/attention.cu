// Attention over ragged per-(sequence, KV head) lists of fp16 keys and values.
//
// attention_rows (decoding and short chunks): flash-decoding. The visible keys of every query row
// are split into chunks so that even one sequence fills the GPU; a block takes one chunk of one
// (list, row) and a combine pass merges the chunks' (max, sum, output) triples. Queries stay fp32.
// Two kernels do a chunk:
//  - group_decode_kernel (the default for groups of up to 8 query heads): the block's four warps
//    split the chunk's keys, 32 at a time, and each warp scores its keys against every query head
//    of the group. Each key and value is read from memory once, by one warp, and a warp issues the
//    loads of its values before it computes the scores (they do not depend on them), so a lane has
//    a whole key row and up to 32 value pieces in flight: decoding reads the cache at a fraction of
//    the memory bandwidth otherwise (the kernel below ran at ~0.44 TB/s on the H200). The warps'
//    partial softmax states are merged in shared memory in warp order.
//  - decode_kernel (larger groups, or TAPPA_CUDA_DECODE_KERNEL=head): each warp takes one query
//    head over the whole chunk; the group's warps read the same keys, through the L1 cache.
//
// attention_flash (prefill): FlashAttention-2 on the tensor cores (mma.sync m16n8k16, fp16 inputs,
// fp32 accumulators). A block holds 64 query rows of one head, four warps of 16 rows, and walks the
// visible key tiles of 64 (double-buffered through cp.async), with the online softmax in registers;
// tiles wholly visible skip the mask. Grouped heads index their KV head's list (no repeat).
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/kernels.cuh"
#include "tappa/error.h"

namespace tappa::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
// Lists per launch: the argument block stays under the 32 KB kernel parameters of CUDA >= 12.1 (a
// whole large batch of one layer in one launch, no table copied to the device first).
constexpr int kDecodeLists = 768;
constexpr int kDecodeListsSmall = 32;  // small batches: a 1 KB argument block launches faster
constexpr int kDecodeListsMid = 128;
// Keys per chunk: fixed, so that a row's summation order depends on its own list alone, never on
// the other sequences of the batch (a sequence decodes the same alone and in a batch).
// TAPPA_CUDA_DECODE_CHUNK (a multiple of 32) overrides it, for measurements: with the group kernel,
// Llama-3.1-8B at 4K context, batch 1 (H200, 2026-12-03): 64 keys 170.6 tok/s, 128 182.7, 256 175.1.
int decode_chunk() {
  static const int c = [] {
    const char* v = std::getenv("TAPPA_CUDA_DECODE_CHUNK");
    const int n = v ? std::atoi(v) : 0;
    return n >= 32 && n % 32 == 0 ? n : 128;
  }();
  return c;
}

template <int MAXL>
struct DecodeArgsT {
  const float* q;
  int64_t ldq;
  float* out;
  int64_t ldo;
  float* part;
  int n_chunks, chunk, max_rows;
  int group;
  float scale_log2;
  int window;
  int n_lists;
  const int* lens;  // device: each list's length (the lists' len fields are 0: a graph replays the launch)
  int* cnt;         // non-null: the combine is fused into the chunk kernel (group kernel; see combine_rows)
  const char* pf;   // L2 prefetch of the next product's weights (attention_rows), pf_bytes of them
  int64_t pf_bytes;
  AttnList lists[MAXL];
};
using DecodeArgs = DecodeArgsT<kDecodeLists>;

// Two fp16 values of a 32-bit word (element 0 in the low half).
__device__ __forceinline__ float2 h2(uint32_t u) {
  __half2 h;
  __builtin_memcpy(&h, &u, 4);
  return __half22float2(h);
}
__device__ __forceinline__ float lo(uint32_t u) { return h2(u).x; }
__device__ __forceinline__ float hi(uint32_t u) { return h2(u).y; }

__device__ __forceinline__ float dot8(uint4 w, const float4 a, const float4 b, float acc) {
  acc = __fmaf_rn(lo(w.x), a.x, acc);
  acc = __fmaf_rn(hi(w.x), a.y, acc);
  acc = __fmaf_rn(lo(w.y), a.z, acc);
  acc = __fmaf_rn(hi(w.y), a.w, acc);
  acc = __fmaf_rn(lo(w.z), b.x, acc);
  acc = __fmaf_rn(hi(w.z), b.y, acc);
  acc = __fmaf_rn(lo(w.w), b.z, acc);
  acc = __fmaf_rn(hi(w.w), b.w, acc);
  return acc;
}

// DPL consecutive fp16 values as floats.
template <int DPL>
__device__ __forceinline__ void load_kv(const kv_t* p, float* f) {
  if constexpr (DPL == 1) {
    f[0] = __half2float(*p);
  } else if constexpr (DPL == 2) {
    const uint32_t u = *reinterpret_cast<const uint32_t*>(p);
    f[0] = lo(u), f[1] = hi(u);
  } else if constexpr (DPL == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    f[0] = lo(u.x), f[1] = hi(u.x), f[2] = lo(u.y), f[3] = hi(u.y);
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    f[0] = lo(u.x), f[1] = hi(u.x), f[2] = lo(u.y), f[3] = hi(u.y);
    f[4] = lo(u.z), f[5] = hi(u.z), f[6] = lo(u.w), f[7] = hi(u.w);
  }
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int DPL, int MAXL>
__global__ void __launch_bounds__(128) decode_kernel(const DecodeArgsT<MAXL> a) {
  pdl_wait();  // common.cuh: before anything an earlier kernel wrote
  constexpr int D = DPL * 32;
  __shared__ __align__(16) float qs[4][D];
  const AttnList L = a.lists[blockIdx.y];
  const int ci = blockIdx.x % a.n_chunks, i = blockIdx.x / a.n_chunks;
  if (i >= L.n_rows) return;
  const int n_vis = a.lens[blockIdx.y] - L.n_rows + i + 1;
  const int first = a.window > 0 ? max(0, n_vis - a.window) : 0;
  const int c0 = first + ci * a.chunk, c1 = min(n_vis, c0 + a.chunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int g = warp; g < a.group; g += 4) {
    const int h = L.kv_head * a.group + g;
    const float* qrow = a.q + static_cast<int64_t>(L.row0 + i) * a.ldq + static_cast<int64_t>(h) * D;
    float* qw = qs[warp];
    for (int d = lane; d < D; d += 32) qw[d] = qrow[d] * a.scale_log2;
    __syncwarp();
    float m = -INFINITY, l = 0.0f, o[DPL];
#pragma unroll
    for (int d = 0; d < DPL; ++d) o[d] = 0.0f;
    for (int j0 = c0; j0 < c1; j0 += 32) {
      const int j = j0 + lane;
      const bool valid = j < c1;
      // Scores: lane j's key, every 16-byte piece requested before the first is used, four partial
      // sums (a chain of D dependent multiply-adds would leave the loads idle).
      const kv_t* kr = L.k + static_cast<int64_t>(valid ? j : c0) * D;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      constexpr int kPieces = D / 8, kBatch = kPieces < 16 ? kPieces : 16;
#pragma unroll
      for (int p0 = 0; p0 < kPieces; p0 += kBatch) {
        uint4 kv[kBatch];
#pragma unroll
        for (int p = 0; p < kBatch; ++p) kv[p] = *reinterpret_cast<const uint4*>(kr + (p0 + p) * 8);
#pragma unroll
        for (int p = 0; p < kBatch; ++p) {
          const float4 q0 = *reinterpret_cast<const float4*>(qw + (p0 + p) * 8);
          const float4 q1 = *reinterpret_cast<const float4*>(qw + (p0 + p) * 8 + 4);
          acc[p % 4] = dot8(kv[p], q0, q1, acc[p % 4]);
        }
      }
      const float sc = valid ? (acc[0] + acc[1]) + (acc[2] + acc[3]) : -INFINITY;
      const float m_new = fmaxf(m, warp_max(sc));  // finite: lane 0's key is visible
      const float alpha = exp2f(m - m_new);
      const float p = valid ? exp2f(sc - m_new) : 0.0f;
      l = l * alpha + warp_sum(p);
#pragma unroll
      for (int d = 0; d < DPL; ++d) o[d] *= alpha;
      // Values: eight rows' loads in flight at a time; rows past the chunk weigh 0 (their address is
      // clamped to a valid row).
#pragma unroll
      for (int t0 = 0; t0 < 32; t0 += 8) {
        float v[8][DPL];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int row = j0 + t0 + u;
          load_kv<DPL>(L.v + static_cast<int64_t>(row < c1 ? row : c0) * D + lane * DPL, v[u]);
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const float pt = __shfl_sync(0xffffffffu, p, t0 + u);
#pragma unroll
          for (int d = 0; d < DPL; ++d) o[d] = __fmaf_rn(pt, v[u][d], o[d]);
        }
      }
      m = m_new;
    }
    if (a.n_chunks == 1) {
      float* orow = a.out + static_cast<int64_t>(L.row0 + i) * a.ldo + static_cast<int64_t>(h) * D + lane * DPL;
#pragma unroll
      for (int d = 0; d < DPL; ++d) orow[d] = o[d] / l;  // as the combine pass divides (same bits)
    } else {
      float* pp = a.part + ((static_cast<int64_t>(blockIdx.y) * a.max_rows + i) * a.n_chunks + ci) * a.group * (D + 2) +
                  static_cast<int64_t>(g) * (D + 2);
      if (lane == 0) pp[0] = m, pp[1] = l;
#pragma unroll
      for (int d = 0; d < DPL; ++d) pp[2 + lane * DPL + d] = o[d];
    }
    __syncwarp();
  }
}

// DPL consecutive fp16 values of a row, raw: loaded first, converted when used.
template <int DPL>
struct KvPiece;
template <>
struct KvPiece<1> { using T = unsigned short; };
template <>
struct KvPiece<2> { using T = uint32_t; };
template <>
struct KvPiece<4> { using T = uint2; };
template <>
struct KvPiece<8> { using T = uint4; };

template <int DPL>
__device__ __forceinline__ void unpack_kv(const typename KvPiece<DPL>::T& u, float* f) {
  if constexpr (DPL == 1) {
    f[0] = __half2float(__ushort_as_half(u));
  } else if constexpr (DPL == 2) {
    f[0] = lo(u), f[1] = hi(u);
  } else if constexpr (DPL == 4) {
    f[0] = lo(u.x), f[1] = hi(u.x), f[2] = lo(u.y), f[3] = hi(u.y);
  } else {
    f[0] = lo(u.x), f[1] = hi(u.x), f[2] = lo(u.y), f[3] = hi(u.y);
    f[4] = lo(u.z), f[5] = hi(u.z), f[6] = lo(u.w), f[7] = hi(u.w);
  }
}

constexpr int kGroupWarps = 4;

// The blocks' share of the L2 prefetch (DecodeArgsT::pf): 4 KB pieces, spread over every block and
// thread of the grid. Before pdl_wait: the weights are constants.
template <int MAXL>
__device__ __forceinline__ void prefetch_share(const DecodeArgsT<MAXL>& a) {
  if (a.pf_bytes <= 0) return;
  const int64_t nb = static_cast<int64_t>(gridDim.x) * gridDim.y, bi = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t pieces = (a.pf_bytes + 4095) / 4096;
  for (int64_t p = bi + nb * threadIdx.x; p < pieces; p += nb * blockDim.x)
    l2_prefetch(a.pf + p * 4096, static_cast<uint32_t>(a.pf_bytes - p * 4096 < 4096 ? a.pf_bytes - p * 4096 : 4096));
}

template <int MAXL>
__device__ void combine_rows(const DecodeArgsT<MAXL>& a, int li, int i, int G, int D, float* smem);

// One chunk of one (list, row) for all G (<= MAXG) query heads of the list's KV head; see the
// file head. Warp w takes the keys c0 + 32 (w + 4 t) .. + 31, t = 0, 1, …; lane j of a tile holds
// key j0 + j (its scores for every head) and dimensions [lane·DPL, lane·DPL + DPL) of the outputs.
// Sums run in a fixed order that depends on the list's own length only (never on the batch).
template <int DPL, int MAXG, int MAXL>
__global__ void __launch_bounds__(kGroupWarps * 32) group_decode_kernel(const DecodeArgsT<MAXL> a) {
  prefetch_share(a);
  pdl_wait();
  constexpr int D = DPL * 32;
  constexpr int kPieces = D / 8, kBatch = kPieces < 16 ? kPieces : 16;
  // Value rows whose loads go out with the keys (registers: VPF · DPL / 2 words).
  constexpr int VPF = DPL >= 8 ? 8 : 32;
  using VT = typename KvPiece<DPL>::T;
  __shared__ __align__(16) float qs[MAXG][D];
  __shared__ float sm_m[kGroupWarps][MAXG], sm_l[kGroupWarps][MAXG];
  __shared__ __align__(16) float sm_o[kGroupWarps][MAXG][D];
  const AttnList L = a.lists[blockIdx.y];
  const int ci = blockIdx.x % a.n_chunks, i = blockIdx.x / a.n_chunks;
  if (i >= L.n_rows) return;  // the whole block: before any barrier
  const int G = a.group;
  const int n_vis = a.lens[blockIdx.y] - L.n_rows + i + 1;
  const int first = a.window > 0 ? max(0, n_vis - a.window) : 0;
  const int c0 = first + ci * a.chunk, c1 = min(n_vis, c0 + a.chunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  {
    const float* qrow = a.q + static_cast<int64_t>(L.row0 + i) * a.ldq + static_cast<int64_t>(L.kv_head * G) * D;
    for (int t = threadIdx.x; t < G * D; t += blockDim.x) qs[t / D][t % D] = qrow[t] * a.scale_log2;
  }
  __syncthreads();
  float m[MAXG], l[MAXG], o[MAXG][DPL];
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int d = 0; d < DPL; ++d) o[g][d] = 0.0f;
  }
  for (int j0 = c0 + 32 * warp; j0 < c1; j0 += 32 * kGroupWarps) {
    const int j = j0 + lane;
    const bool valid = j < c1;
    const kv_t* kr = L.k + static_cast<int64_t>(valid ? j : c0) * D;
    const kv_t* vbase = L.v + lane * DPL;
    VT vp[VPF];
#pragma unroll
    for (int u = 0; u < VPF; ++u) {
      const int row = j0 + u;
      vp[u] = *reinterpret_cast<const VT*>(vbase + static_cast<int64_t>(row < c1 ? row : c0) * D);
    }
    float acc[MAXG];
#pragma unroll
    for (int g = 0; g < MAXG; ++g) acc[g] = 0.0f;
#pragma unroll
    for (int p0 = 0; p0 < kPieces; p0 += kBatch) {
      uint4 kv[kBatch];
#pragma unroll
      for (int p = 0; p < kBatch; ++p) kv[p] = *reinterpret_cast<const uint4*>(kr + (p0 + p) * 8);
#pragma unroll
      for (int p = 0; p < kBatch; ++p) {
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          if (g < G) {
            const float4 q0 = *reinterpret_cast<const float4*>(&qs[g][(p0 + p) * 8]);
            const float4 q1 = *reinterpret_cast<const float4*>(&qs[g][(p0 + p) * 8 + 4]);
            acc[g] = dot8(kv[p], q0, q1, acc[g]);
          }
        }
      }
    }
    float p[MAXG];
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      if (g < G) {
        const float sc = valid ? acc[g] : -INFINITY;
        const float m_new = fmaxf(m[g], warp_max(sc));  // finite: lane 0's key is visible
        const float alpha = exp2f(m[g] - m_new);
        p[g] = valid ? exp2f(sc - m_new) : 0.0f;
        l[g] = l[g] * alpha + p[g];
#pragma unroll
        for (int d = 0; d < DPL; ++d) o[g][d] *= alpha;
        m[g] = m_new;
      }
    }
    // Values: rows past the chunk weigh 0 (their address was clamped to a valid row).
#pragma unroll
    for (int u = 0; u < VPF; ++u) {
      float v[DPL];
      unpack_kv<DPL>(vp[u], v);
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        if (g < G) {
          const float pt = __shfl_sync(0xffffffffu, p[g], u);
#pragma unroll
          for (int d = 0; d < DPL; ++d) o[g][d] = __fmaf_rn(pt, v[d], o[g][d]);
        }
      }
    }
#pragma unroll
    for (int u0 = VPF; u0 < 32; u0 += VPF) {
#pragma unroll
      for (int u = 0; u < VPF; ++u) {
        const int row = j0 + u0 + u;
        vp[u] = *reinterpret_cast<const VT*>(vbase + static_cast<int64_t>(row < c1 ? row : c0) * D);
      }
#pragma unroll
      for (int u = 0; u < VPF; ++u) {
        float v[DPL];
        unpack_kv<DPL>(vp[u], v);
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          if (g < G) {
            const float pt = __shfl_sync(0xffffffffu, p[g], u0 + u);
#pragma unroll
            for (int d = 0; d < DPL; ++d) o[g][d] = __fmaf_rn(pt, v[d], o[g][d]);
          }
        }
      }
    }
  }
  // The warp's state to shared memory (a warp that had no keys leaves m = -inf, l = 0, o = 0).
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < G) {
      const float lw = warp_sum(l[g]);
      if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = lw;
#pragma unroll
      for (int d = 0; d < DPL; ++d) sm_o[warp][g][lane * DPL + d] = o[g][d];
    }
  }
  __syncthreads();
  // Merge the warps in warp order: thread t takes (head, dimension) pairs t, t + 128, …
  for (int t = threadIdx.x; t < G * D; t += blockDim.x) {
    const int g = t / D, d = t % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kGroupWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float sum = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kGroupWarps; ++w) {
      const float wt = sm_l[w][g] > 0.0f ? exp2f(sm_m[w][g] - M) : 0.0f;
      sum += sm_l[w][g] * wt;
      acc += sm_o[w][g][d] * wt;
    }
    const int h = L.kv_head * G + g;
    if (a.n_chunks == 1) {
      a.out[static_cast<int64_t>(L.row0 + i) * a.ldo + static_cast<int64_t>(h) * D + d] = acc / sum;
    } else {
      float* pp = a.part + ((static_cast<int64_t>(blockIdx.y) * a.max_rows + i) * a.n_chunks + ci) * G * (D + 2) +
                  static_cast<int64_t>(g) * (D + 2);
      if (d == 0) pp[0] = M, pp[1] = sum;
      pp[2 + d] = acc;
    }
  }
  if (a.n_chunks == 1 || !a.cnt) return;
  // Fused combine: the block that finishes a (list, row)'s last chunk merges them all, as
  // combine_kernel would (the same code, the same bits), and sets the count back to 0 for the next
  // launch. sm_o is free now; it holds the chunks' weights (launch_decode_t checks the room).
  __shared__ int last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* c = a.cnt + static_cast<int64_t>(blockIdx.y) * a.max_rows + i;
    last = atomicAdd(c, 1) == a.n_chunks - 1;
    if (last) *c = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  combine_rows(a, blockIdx.y, i, G, D, &sm_o[0][0][0]);
}

// Which chunk kernel attention_rows launches: TAPPA_CUDA_DECODE_KERNEL=head picks the one-warp-per-
// query-head kernel for every group (for measurements; both are tested against the reference).
bool group_kernel_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("TAPPA_CUDA_DECODE_KERNEL");
    return !(v && std::string(v) == "head");
  }();
  return on;
}

// One block per (list, row, query head of the group): merges its chunks. The chunks' weights
// exp2(m_c - M) go to shared memory first (each thread loads other chunks, all at once), then each
// thread sums its dimensions over the chunks, eight loads in flight: a loop of dependent loads over
// 33 chunks (4K keys) was latency-bound. Sums run over the chunks in ascending order.
constexpr int kCombineMaxChunks = 4096;  // shared memory: 2 floats a chunk

// Output dimension d of one (list, row, head): the chunks' partials base[c · stride + 2 + d] weighted
// by cw (exp2(m_c - M), 0 for empty chunks), over sum. Both combines call it (same code, same bits).
__device__ __forceinline__ float combine_dim(const float* base, int64_t stride, int d, int nc, const float* cw,
                                             float sum) {
  float o = 0.0f;
  int c = 0;
  for (; c + 8 <= nc; c += 8) {
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = __ldcg(base + (c + u) * stride + 2 + d);
#pragma unroll
    for (int u = 0; u < 8; ++u) o += v[u] * cw[c + u];
  }
  for (; c < nc; ++c) o += __ldcg(base + c * stride + 2 + d) * cw[c];
  return o / sum;
}
__device__ __forceinline__ float combine_sum(int nc, const float* cw, const float* cl) {
  float sum = 0.0f;
  for (int c = 0; c < nc; ++c) sum += cl[c] * cw[c];
  return sum;
}

// The fused combine of (list li, row i), every head of the group at once: smem holds 2 · G ·
// n_chunks floats (weights, then l). Called by the whole block.
template <int MAXL>
__device__ void combine_rows(const DecodeArgsT<MAXL>& a, int li, int i, int G, int D, float* smem) {
  __shared__ float Ms[8];
  const int nc = a.n_chunks, nt = blockDim.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* base0 = a.part + (static_cast<int64_t>(li) * a.max_rows + i) * nc * G * (D + 2);
  const int64_t stride = static_cast<int64_t>(G) * (D + 2);
  float* cw = smem;
  float* cl = smem + G * nc;
  for (int t = threadIdx.x; t < G * nc; t += nt) {
    const int g = t / nc, c = t % nc;
    cw[t] = __ldcg(base0 + g * (D + 2) + c * stride);
    cl[t] = __ldcg(base0 + g * (D + 2) + c * stride + 1);
  }
  __syncthreads();
  for (int g = warp; g < G; g += nt / 32) {
    float M = -INFINITY;
    for (int c = lane; c < nc; c += 32) M = fmaxf(M, cw[g * nc + c]);
    M = warp_max(M);
    if (lane == 0) Ms[g] = M;
  }
  __syncthreads();
  for (int t = threadIdx.x; t < G * nc; t += nt) cw[t] = cl[t] > 0.0f ? exp2f(cw[t] - Ms[t / nc]) : 0.0f;
  __syncthreads();
  const AttnList& L = a.lists[li];
  for (int t = threadIdx.x; t < G * D; t += nt) {
    const int g = t / D, d = t % D;
    const float sum = combine_sum(nc, cw + g * nc, cl + g * nc);
    const int h = L.kv_head * G + g;
    a.out[static_cast<int64_t>(L.row0 + i) * a.ldo + static_cast<int64_t>(h) * D + d] =
        combine_dim(base0 + g * (D + 2), stride, d, nc, cw + g * nc, sum);
  }
}

template <int MAXL>
__global__ void combine_kernel(const DecodeArgsT<MAXL> a, int D) {
  pdl_wait();
  extern __shared__ float cw[];  // [n_chunks] weights, then [n_chunks] l
  __shared__ float red[32];
  const int g = blockIdx.x % a.group;
  const int r = blockIdx.x / a.group;
  const int i = r % a.max_rows, li = r / a.max_rows;
  const AttnList& L = a.lists[li];
  if (i >= L.n_rows) return;
  const int nc = a.n_chunks;
  const float* base = a.part + (static_cast<int64_t>(li) * a.max_rows + i) * nc * a.group * (D + 2) +
                      static_cast<int64_t>(g) * (D + 2);
  const int64_t stride = static_cast<int64_t>(a.group) * (D + 2);
  float* cl = cw + nc;
  float M = -INFINITY;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) {
    cw[c] = base[c * stride];
    cl[c] = base[c * stride + 1];
    M = fmaxf(M, cw[c]);
  }
  M = warp_max(M);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = M;
  __syncthreads();
  M = -INFINITY;
  for (int w = 0; w < (blockDim.x + 31) / 32; ++w) M = fmaxf(M, red[w]);
  for (int c = threadIdx.x; c < nc; c += blockDim.x) cw[c] = cl[c] > 0.0f ? exp2f(cw[c] - M) : 0.0f;
  __syncthreads();
  const float sum = combine_sum(nc, cw, cl);
  const int h = L.kv_head * a.group + g;
  float* orow = a.out + static_cast<int64_t>(L.row0 + i) * a.ldo + static_cast<int64_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) orow[d] = combine_dim(base, stride, d, nc, cw, sum);
}

template <int DPL, int MAXL>
void launch_decode_t(const DecodeArgsT<MAXL>& a0, int D, cudaStream_t s) {
  DecodeArgsT<MAXL> a = a0;
  const dim3 grid(a.n_chunks * a.max_rows, a.n_lists);
  const bool group = group_kernel_enabled() && a.group <= 8;
  const int maxg = a.group == 1 ? 1 : a.group == 2 ? 2 : a.group <= 4 ? 4 : 8;
  // The fused combine needs the group kernel, several chunks and room in its sm_o for the weights.
  const bool fused = a.cnt && group && a.n_chunks > 1 && 2 * a.group * a.n_chunks <= kGroupWarps * maxg * D;
  if (!fused) a.cnt = nullptr;
  if (!group) a.pf_bytes = 0;
  if (!group) {
    launch(decode_kernel<DPL, MAXL>, grid, 128, 0, s, a);
  } else if (a.group == 1) {
    launch(group_decode_kernel<DPL, 1, MAXL>, grid, kGroupWarps * 32, 0, s, a);
  } else if (a.group == 2) {
    launch(group_decode_kernel<DPL, 2, MAXL>, grid, kGroupWarps * 32, 0, s, a);
  } else if (a.group <= 4) {
    launch(group_decode_kernel<DPL, 4, MAXL>, grid, kGroupWarps * 32, 0, s, a);
  } else {
    launch(group_decode_kernel<DPL, 8, MAXL>, grid, kGroupWarps * 32, 0, s, a);
  }
  if (a.n_chunks > 1 && !fused)
    launch(combine_kernel<MAXL>, a.n_lists * a.max_rows * a.group, D < 128 ? D : 128,
           2 * sizeof(float) * static_cast<size_t>(a.n_chunks), s, a, D);
}

template <int DPL, int MAXL>
void launch_decode_small(const DecodeArgs& a, int D, cudaStream_t s) {
  DecodeArgsT<MAXL> b{};
  b.lens = a.lens;
  b.q = a.q, b.ldq = a.ldq, b.out = a.out, b.ldo = a.ldo, b.part = a.part;
  b.n_chunks = a.n_chunks, b.chunk = a.chunk, b.max_rows = a.max_rows, b.group = a.group;
  b.scale_log2 = a.scale_log2, b.window = a.window, b.n_lists = a.n_lists;
  b.cnt = a.cnt, b.pf = a.pf, b.pf_bytes = a.pf_bytes;
  for (int i = 0; i < a.n_lists; ++i) b.lists[i] = a.lists[i];
  launch_decode_t<DPL, MAXL>(b, D, s);
}

template <int DPL>
void launch_decode(const DecodeArgs& a, int D, cudaStream_t s) {
  // The smallest argument block that holds the lists (it is copied, and compared by the graph gate,
  // at every launch).
  if (a.n_lists <= kDecodeListsSmall) return launch_decode_small<DPL, kDecodeListsSmall>(a, D, s);
  if (a.n_lists <= kDecodeListsMid) return launch_decode_small<DPL, kDecodeListsMid>(a, D, s);
  launch_decode_t<DPL, kDecodeLists>(a, D, s);
}

// --- tensor-core prefill --------------------------------------------------------------------------

struct FlashList {
  const kv_t* k;
  const kv_t* v;
  int len;
};
constexpr int kFlashHeads = 64;
struct FlashArgs {
  const f16* q;
  int64_t ldq;
  float* out;
  int64_t ldo;
  int n_rows;
  int group;
  float scale_log2;
  int window;
  FlashList lists[kFlashHeads];
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_h2(float x, float y) {
  const __half2 v = __floats2half2_rn(x, y);  // x in the low half
  uint32_t u;
  __builtin_memcpy(&u, &v, 4);
  return u;
}

constexpr int kBM = 64, kBN = 64;

template <int D>
constexpr int flash_smem() {
  return (kBM + 4 * kBN) * (D + 8) * 2;
}

template <int D>
__global__ void __launch_bounds__(128) flash_kernel(const FlashArgs a) {
  pdl_wait();
  constexpr int LDS = D + 8;  // +16 bytes a row: ldmatrix's eight rows fall in different banks
  constexpr int NT = kBN / 8, DT = D / 8, CH = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  f16* Qs = reinterpret_cast<f16*>(smem_raw);
  kv_t* Ks = Qs + kBM * LDS;       // [2][kBN][LDS]
  kv_t* Vs = Ks + 2 * kBN * LDS;   // [2][kBN][LDS]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int h = blockIdx.y, kvh = h / a.group;
  const FlashList L = a.lists[kvh];
  const int qr0 = blockIdx.x * kBM;
  const int base = L.len - a.n_rows;  // list rows before the sequence's first query row
  const int last_row = min(qr0 + kBM, a.n_rows) - 1;
  const int kv_end = base + last_row + 1;
  const int kv_begin = a.window > 0 ? max(0, base + qr0 + 1 - a.window) : 0;
  const int t_begin = kv_begin / kBN, t_end = (kv_end + kBN - 1) / kBN;

  for (int idx = tid; idx < kBM * CH; idx += 128) {
    const int r = idx / CH, c = idx % CH, row = qr0 + r;
    const bool ok = row < a.n_rows;
    cp_async16(Qs + r * LDS + c * 8, a.q + static_cast<int64_t>(ok ? row : 0) * a.ldq + static_cast<int64_t>(h) * D + c * 8,
               ok ? 16 : 0);
  }
  auto load_kv = [&](int t, int buf) {
    kv_t* kd = Ks + buf * kBN * LDS;
    kv_t* vd = Vs + buf * kBN * LDS;
    for (int idx = tid; idx < kBN * CH; idx += 128) {
      const int r = idx / CH, c = idx % CH, key = t * kBN + r;
      const bool ok = key < L.len;
      const int64_t off = static_cast<int64_t>(ok ? key : 0) * D + c * 8;
      cp_async16(kd + r * LDS + c * 8, L.k + off, ok ? 16 : 0);
      cp_async16(vd + r * LDS + c * 8, L.v + off, ok ? 16 : 0);
    }
  };
  load_kv(t_begin, 0);
  cp_async_commit();

  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const int r_lo = qr0 + warp * 16 + lane / 4, r_hi = r_lo + 8;
  const int nvis_lo = base + r_lo + 1, nvis_hi = base + r_hi + 1;
  const int first_lo = a.window > 0 ? max(0, nvis_lo - a.window) : 0;
  const int first_hi = a.window > 0 ? max(0, nvis_hi - a.window) : 0;
  const bool ok_lo = r_lo < a.n_rows, ok_hi = r_hi < a.n_rows;
  const int min_nvis = base + qr0 + 1;
  const int max_first = a.window > 0 ? max(0, kv_end - a.window) : 0;
  const bool all_rows = qr0 + kBM <= a.n_rows;

  for (int t = t_begin; t < t_end; ++t) {
    const int buf = (t - t_begin) & 1;
    if (t + 1 < t_end) load_kv(t + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const kv_t* Kb = Ks + buf * kBN * LDS;
    const kv_t* Vb = Vs + buf * kBN * LDS;

    float s[NT][4];
#pragma unroll
    for (int i = 0; i < NT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[4];
      ldmatrix_x4(qa, Qs + (warp * 16 + (lane % 16)) * LDS + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int nn = 0; nn < kBN / 16; ++nn) {
        uint32_t kb[4];
        ldmatrix_x4(kb, Kb + (nn * 16 + (lane % 8) + (lane >> 4) * 8) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
        mma16816(s[2 * nn], qa, kb[0], kb[1]);
        mma16816(s[2 * nn + 1], qa, kb[2], kb[3]);
      }
    }
    const int kbase = t * kBN;
    const bool need_mask = !(all_rows && kbase >= max_first && kbase + kBN <= min_nvis);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = s[nt][e] * a.scale_log2;
        if (need_mask) {
          const int key = kbase + nt * 8 + 2 * (lane % 4) + (e & 1);
          const bool vis = e < 2 ? (ok_lo && key >= first_lo && key < nvis_lo) : (ok_hi && key >= first_hi && key < nvis_hi);
          if (!vis) v = -INFINITY;
        }
        s[nt][e] = v;
      }
    }
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // A row with nothing visible yet keeps -inf: exponentiate against 0 then (every term is 0).
    const float ref0 = mn0 == -INFINITY ? 0.0f : mn0, ref1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float al0 = exp2f(m0 - ref0), al1 = exp2f(m1 - ref1);
    m0 = mn0, m1 = mn1;
    float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - ref0);
      s[nt][1] = exp2f(s[nt][1] - ref0);
      s[nt][2] = exp2f(s[nt][2] - ref1);
      s[nt][3] = exp2f(s[nt][3] - ref1);
      ps0 += s[nt][0] + s[nt][1];
      ps1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * al0 + ps0;
    l1 = l1 * al1 + ps1;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      o[dt][0] *= al0, o[dt][1] *= al0;
      o[dt][2] *= al1, o[dt][3] *= al1;
    }
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack_h2(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack_h2(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, Vb + (kk * 16 + (lane % 8) + ((lane >> 3) & 1) * 8) * LDS + dd * 16 + (lane >> 4) * 8);
        mma16816(o[2 * dd], pa, vb[0], vb[1]);
        mma16816(o[2 * dd + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this buffer
  }
  cp_async_wait<0>();
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) {
    const int64_t col = static_cast<int64_t>(h) * D + dt * 8 + 2 * (lane % 4);
    if (ok_lo) {
      float* p = a.out + static_cast<int64_t>(r_lo) * a.ldo + col;
      p[0] = o[dt][0] * inv0;
      p[1] = o[dt][1] * inv0;
    }
    if (ok_hi) {
      float* p = a.out + static_cast<int64_t>(r_hi) * a.ldo + col;
      p[0] = o[dt][2] * inv1;
      p[1] = o[dt][3] * inv1;
    }
  }
}

template <int D>
void launch_flash(const FlashArgs& a, int n_head, cudaStream_t s) {
  static bool configured = false;
  if (!configured) {
    TAPPA_CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, flash_smem<D>()));
    configured = true;
  }
  launch(flash_kernel<D>, dim3((a.n_rows + kBM - 1) / kBM, n_head), 128, flash_smem<D>(), s, a);
}

// --- probabilities for the taps -------------------------------------------------------------------

__global__ void probs_kernel(const AttnList* lists, const ProbTriple* triples, int group, int D, float scale_log2,
                             int window, const float* q, int64_t ldq, float* probs, int64_t ld) {
  pdl_wait();
  extern __shared__ float qs[];  // [D]
  __shared__ float red[32];
  const ProbTriple tr = triples[blockIdx.x];
  const AttnList L = lists[tr.list];
  const int h = L.kv_head * group + tr.g;
  const int n_vis = L.len - L.n_rows + tr.row + 1;
  const int first = window > 0 ? max(0, n_vis - window) : 0;
  const float* qrow = q + static_cast<int64_t>(L.row0 + tr.row) * ldq + static_cast<int64_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qrow[d] * scale_log2;
  __syncthreads();
  float* pr = probs + static_cast<int64_t>(blockIdx.x) * ld;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n_vis; j += blockDim.x) {
    if (j < first) continue;
    const kv_t* kr = L.k + static_cast<int64_t>(j) * D;
    float acc = 0.0f;
    for (int p = 0; p < D / 8; ++p) {
      const uint4 kv = *reinterpret_cast<const uint4*>(kr + p * 8);
      const float4 q0 = *reinterpret_cast<const float4*>(qs + p * 8);
      const float4 q1 = *reinterpret_cast<const float4*>(qs + p * 8 + 4);
      acc = dot8(kv, q0, q1, acc);
    }
    pr[j] = acc;
    mx = fmaxf(mx, acc);
  }
  mx = warp_max(mx);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = mx;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : -INFINITY;
    v = warp_max(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  mx = red[0];
  __syncthreads();
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n_vis; j += blockDim.x) {
    const float e = j < first ? 0.0f : exp2f(pr[j] - mx);
    pr[j] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float inv = 1.0f / red[0];
  for (int j = threadIdx.x; j < n_vis; j += blockDim.x) pr[j] *= inv;
}

void check_head_dim(int D) {
  if (D % 32 != 0 || D > 256)
    throw Error("the CUDA attention supports head sizes that are multiples of 32 up to 256 (this model's: " +
                std::to_string(D) + ")");
}

}  // namespace

constexpr bool kFusedCombine = false;
// TAPPA_CUDA_DECODE_COMBINE=separate | fused (default: kFusedCombine): the combine pass as its own kernel (the bits are the same;
// read at every call, so that a test compares the two in one process).
bool fused_combine_enabled() {
  const char* v = std::getenv("TAPPA_CUDA_DECODE_COMBINE");
  if (v && std::string(v) == "separate") return false;
  if (v && std::string(v) == "fused") return true;
  return kFusedCombine;
}

void attention_rows(const AttnList* lists, int n_lists, const AttnShape& sh, const float* q, int64_t ldq, float* out,
                    int64_t ldo, int n_sm, DecodeScratch& scratch, Context& ctx, const void* prefetch,
                    size_t prefetch_bytes) {
  const int D = sh.head_dim;
  std::vector<int>& lens_ = scratch.lens;
  check_head_dim(D);
  for (int l0 = 0; l0 < n_lists; l0 += kDecodeLists) {
    DecodeArgs a{};
    a.n_lists = std::min(kDecodeLists, n_lists - l0);
    // The grid covers each list's capacity, not its length, and the lengths are read on the
    // device: the launch is the same every step until a list moves (CUDA graphs, common.cuh).
    // Chunks past a list's end do nothing (they leave an empty partial for the combine pass).
    int max_rows = 0, max_span = 1;
    lens_.resize(static_cast<size_t>(a.n_lists));
    for (int i = 0; i < a.n_lists; ++i) {
      const AttnList& L = lists[l0 + i];
      a.lists[i] = L;
      a.lists[i].len = 0;
      lens_[i] = L.len;
      const int cap = std::max(L.cap, L.len);
      max_rows = std::max(max_rows, L.n_rows);
      max_span = std::max(max_span, sh.window > 0 ? std::min(cap, sh.window) : cap);
    }
    if (max_rows == 0) continue;
    const int chunk = decode_chunk();
    const int n_chunks = (max_span + chunk - 1) / chunk;
    if (n_chunks > kCombineMaxChunks)
      throw Error("the CUDA decode attention holds at most " + std::to_string(kCombineMaxChunks * chunk) +
                  " keys a list (TAPPA_CUDA_DECODE_CHUNK=" + std::to_string(chunk) + "; this list: " +
                  std::to_string(max_span) + ")");
    a.q = q, a.ldq = ldq, a.out = out, a.ldo = ldo;
    a.n_chunks = n_chunks, a.chunk = chunk, a.max_rows = max_rows;
    a.group = sh.group;
    a.scale_log2 = sh.scale * kLog2e;
    a.window = sh.window;
    a.lens = ctx.gate->dyn(lens_.data(), lens_.size());
    if (n_chunks > 1)
      a.part = scratch.part.get<float>(ctx, static_cast<size_t>(a.n_lists) * max_rows * n_chunks * sh.group * (D + 2));
    if (n_chunks > 1 && fused_combine_enabled()) {
      const size_t had = scratch.cnt.bytes;
      a.cnt = scratch.cnt.get<int>(ctx, static_cast<size_t>(a.n_lists) * max_rows);
      if (scratch.cnt.bytes != had) {  // a new buffer: zeroed once, the kernels keep it so
        ctx.gate->barrier();
        TAPPA_CUDA_CHECK(cudaMemsetAsync(scratch.cnt.p, 0, scratch.cnt.bytes, ctx.stream));
      }
    }
    if (l0 == 0 && prefetch && prefetch_bytes >= 16) {
      a.pf = static_cast<const char*>(prefetch);
      a.pf_bytes = static_cast<int64_t>(prefetch_bytes / 16 * 16);
    }
    switch (D / 32) {
      case 1: launch_decode<1>(a, D, ctx.stream); break;
      case 2: launch_decode<2>(a, D, ctx.stream); break;
      case 4: launch_decode<4>(a, D, ctx.stream); break;
      case 8: launch_decode<8>(a, D, ctx.stream); break;
      default: {
        // 96, 160, 192, 224: the next instantiation up reads past the row; not supported.
        throw Error("the CUDA attention supports head sizes 32, 64, 128 and 256 (this model's: " + std::to_string(D) + ")");
      }
    }
  }
}

bool flash_supported(int head_dim) { return head_dim == 64 || head_dim == 128; }

void attention_flash(const AttnList* lists, int n_head_kv, const AttnShape& sh, const f16* q, int64_t ldq, float* out,
                     int64_t ldo, cudaStream_t s) {
  if (n_head_kv > kFlashHeads) throw Error("CUDA flash attention: more than 64 KV heads");
  FlashArgs a{};
  a.q = q, a.ldq = ldq, a.out = out, a.ldo = ldo;
  a.n_rows = lists[0].n_rows;
  a.group = sh.group;
  a.scale_log2 = sh.scale * kLog2e;
  a.window = sh.window;
  for (int h = 0; h < n_head_kv; ++h) a.lists[h] = {lists[h].k, lists[h].v, lists[h].len};
  if (sh.head_dim == 64) return launch_flash<64>(a, n_head_kv * sh.group, s);
  return launch_flash<128>(a, n_head_kv * sh.group, s);
}

void attention_probs(const AttnList* lists, const ProbTriple* triples, int n, const AttnShape& sh, const float* q,
                     int64_t ldq, float* probs, int64_t ld, Context& ctx, Scratch& tmp) {
  if (n == 0) return;
  check_head_dim(sh.head_dim);
  // The list and triple tables go to the device through one scratch buffer.
  int n_lists = 0;
  for (int t = 0; t < n; ++t) n_lists = std::max(n_lists, triples[t].list + 1);
  const size_t lb = static_cast<size_t>(n_lists) * sizeof(AttnList), tb = static_cast<size_t>(n) * sizeof(ProbTriple);
  unsigned char* dev = tmp.get<unsigned char>(ctx, lb + tb + 16);
  ctx.gate->barrier();
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(dev, lists, lb, cudaMemcpyHostToDevice, ctx.stream));
  const size_t toff = (lb + 15) / 16 * 16;
  TAPPA_CUDA_CHECK(cudaMemcpyAsync(dev + toff, triples, tb, cudaMemcpyHostToDevice, ctx.stream));
  ctx.gate->barrier();
  launch(probs_kernel, n, 256, sh.head_dim * sizeof(float), ctx.stream, reinterpret_cast<const AttnList*>(dev),
         reinterpret_cast<const ProbTriple*>(dev + toff), sh.group, sh.head_dim, sh.scale * kLog2e, sh.window, q, ldq,
         probs, ld);
}

}  // namespace tappa::cuda
