// Elementwise and row kernels of the CUDA backend. They are memory-bound and small next to the
// products; each is one pass over its data with the arithmetic of the reference backend (fp32, and
// RMSNorm's squares summed in double like ggml's), so parity needs no tolerance beyond libm's ulp.
#include <algorithm>

#include "backend/cuda/kernels.cuh"
#include "model/random_weights.h"
#include "tappa/error.h"

namespace tappa::cuda {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

template <class T>
__global__ void embed_kernel(const T* table, const int32_t* tokens, int64_t cols, float scale, float* x, int64_t ldx) {
  pdl_wait();  // common.cuh: before anything an earlier kernel wrote
  const T* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * cols;
  float* xi = x + static_cast<int64_t>(blockIdx.x) * ldx;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) xi[j] = static_cast<float>(row[j]) * scale;
}

// One block per row, the row held in registers (one read): a decode step's rows are a few
// thousand floats, so the kernel is latency-bound and wants every load in flight at once.
constexpr int kNormThreads = 512;
constexpr int kNormPerThread = 16;  // rows up to 8192 floats stay in registers; longer ones loop
__global__ void __launch_bounds__(kNormThreads) rms_norm_kernel(const float* x, int64_t ldx, const float* w, float eps,
                                                                float* out, int64_t ldo, int64_t cols) {
  pdl_wait();
  const float* xi = x + blockIdx.x * ldx;
  float* oi = out + blockIdx.x * ldo;
  float v[kNormPerThread];
  double ss = 0.0;
#pragma unroll
  for (int i = 0; i < kNormPerThread; ++i) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(i) * kNormThreads;
    v[i] = j < cols ? xi[j] : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < kNormPerThread; ++i) ss += static_cast<double>(v[i] * v[i]);
  for (int64_t j = threadIdx.x + int64_t{kNormPerThread} * kNormThreads; j < cols; j += kNormThreads) {
    const float t = xi[j];
    ss += static_cast<double>(t * t);
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  __shared__ double part[kNormThreads / 32];
  __shared__ float s_scale;
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int i = 0; i < kNormThreads / 32; ++i) t += part[i];
    s_scale = 1.0f / sqrtf(static_cast<float>(t / static_cast<double>(cols)) + eps);
  }
  __syncthreads();
  const float s = s_scale;
#pragma unroll
  for (int i = 0; i < kNormPerThread; ++i) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(i) * kNormThreads;
    if (j < cols) oi[j] = v[i] * s * w[j];
  }
  for (int64_t j = threadIdx.x + int64_t{kNormPerThread} * kNormThreads; j < cols; j += kNormThreads) oi[j] = xi[j] * s * w[j];
}

__global__ void elementwise_kernel(Elementwise op, float* y, int64_t ldy, const float* x, int64_t ldx, float a,
                                   int64_t rows, int64_t cols) {
  pdl_wait();
  const int64_t n = rows * cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, j = t % cols;
    float& v = y[i * ldy + j];
    switch (op) {
      case Elementwise::AddBias: v += x[j]; break;
      case Elementwise::Add: v += x[i * ldx + j]; break;
      case Elementwise::Scale: v *= a; break;
      case Elementwise::Softcap: v = tanhf(v * (1.0f / a)) * a; break;
    }
  }
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ float gelu_tanh(float g) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * g * (1.0f + tanhf(k * g * (1.0f + 0.044715f * g * g)));
}

__global__ void glu_kernel(float* gate, int64_t ldg, const float* up, int64_t ldu, bool gelu, int64_t rows, int64_t cols) {
  pdl_wait();
  const int64_t n = rows * cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, j = t % cols;
    const float g = gate[i * ldg + j];
    gate[i * ldg + j] = (gelu ? gelu_tanh(g) : silu(g)) * up[i * ldu + j];
  }
}

// (x_a, x_b) -> (x_a c - x_b s, x_a s + x_b c) with one fused multiply-add each, as the reference.
// Row blockIdx.x; the pairs of all heads of x (and then of x2, the keys) spread over blockIdx.y.
__global__ void rope_kernel(const float* table, int64_t ldt, float* x, int64_t ldx, int n_heads, float* x2, int64_t ldx2,
                            int n_heads2, int head_dim, int n_rot, bool neox) {
  pdl_wait();
  const float* cs = table + blockIdx.x * ldt;
  const int half = n_rot / 2;
  const int t = blockIdx.y * blockDim.x + threadIdx.x;
  if (t >= (n_heads + n_heads2) * half) return;
  const bool second = t >= n_heads * half;
  const int tt = second ? t - n_heads * half : t;
  const int h = tt / half, m = tt % half;
  float* v = (second ? x2 + blockIdx.x * ldx2 : x + blockIdx.x * ldx) + static_cast<int64_t>(h) * head_dim;
  const int a = neox ? m : 2 * m, b = neox ? m + half : 2 * m + 1;
  const float x0 = v[a], x1 = v[b], c = cs[2 * m], s = cs[2 * m + 1];
  v[a] = __fmaf_rn(x0, c, -__fmul_rn(x1, s));
  v[b] = __fmaf_rn(x0, s, __fmul_rn(x1, c));
}

__global__ void to_bf16_kernel(const float* x, int64_t ldx, bf16* y, int64_t ldy, int64_t rows, int64_t cols) {
  pdl_wait();
  const int64_t n = rows * cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, j = t % cols;
    y[i * ldy + j] = __float2bfloat16_rn(x[i * ldx + j]);
  }
}

__global__ void random_fill_kernel(bf16* dst, int64_t n, uint64_t seed, float step) {
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __ushort_as_bfloat16(random_weights::weight_bits(seed, static_cast<uint64_t>(i), step));
}

__global__ void argmax_kernel(const float* x, int64_t ldx, int64_t cols, int32_t* ids) {
  pdl_wait();
  const float* xi = x + blockIdx.x * ldx;
  float best = -INFINITY;
  int64_t idx = cols;  // larger than any index: loses every tie
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = xi[j];
    if (v > best) best = v, idx = j;  // j ascends per thread: the first maximum stays
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ob > best || (ob == best && oi < idx)) best = ob, idx = oi;
  }
  __shared__ float sb[kThreads / 32];
  __shared__ int64_t si[kThreads / 32];
  if (threadIdx.x % 32 == 0) sb[threadIdx.x / 32] = best, si[threadIdx.x / 32] = idx;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w)
      if (sb[w] > best || (sb[w] == best && si[w] < idx)) best = sb[w], idx = si[w];
    ids[blockIdx.x] = static_cast<int32_t>(idx < cols ? idx : 0);
  }
}

// One launch for a layer's K/V appends, optionally with the RoPE of that step's queries and keys
// (RopeAppend::k set): blocks [0, q_blocks) rotate the query rows as rope_kernel does; then one
// block per (entry, row) rotates the key row in registers with the same arithmetic (so the cache
// gets the bits the unfused rope + append gave), writes it back and to the cache, and converts
// the value row. The destination row is the list's length before the append, read from `lens`
// (device memory: a replayed graph appends where the step's lists end).
template <int MAXE>
__global__ void __launch_bounds__(128) rope_append_kernel(const RopeAppendT<MAXE> a) {
  pdl_wait();
  int b = blockIdx.x;
  const int half = a.n_rot / 2;
  if (b < a.q_blocks) {
    const int row = b / a.qy;
    const int t = (b % a.qy) * blockDim.x + threadIdx.x;
    if (t >= a.n_head * half) return;
    const int h = t / half, m = t % half;
    const float* cs = a.table + row * a.ldt;
    float* v = a.q + row * a.ldq + static_cast<int64_t>(h) * a.head_dim;
    const int ia = a.neox ? m : 2 * m, ib = a.neox ? m + half : 2 * m + 1;
    const float x0 = v[ia], x1 = v[ib], c = cs[2 * m], sn = cs[2 * m + 1];
    v[ia] = __fmaf_rn(x0, c, -__fmul_rn(x1, sn));
    v[ib] = __fmaf_rn(x0, sn, __fmul_rn(x1, c));
    return;
  }
  b -= a.q_blocks;
  const int ei = b / a.max_rows, i = b % a.max_rows;
  const AppendEntry& e = a.e[ei];
  if (i >= e.rows) return;
  const int D = a.head_dim;
  float* ks = const_cast<float*>(e.k) + static_cast<int64_t>(i) * e.ldk;
  const float* vs = e.v + static_cast<int64_t>(i) * e.ldv;
  const int64_t at = static_cast<int64_t>(a.lens[ei] + i) * D;
  kv_t* kd = e.dk + at;
  kv_t* vd = e.dv + at;
  if (a.rope) {
    const float* cs = a.table + static_cast<int64_t>(e.row + i) * a.ldt;
    for (int m = threadIdx.x; m < half; m += blockDim.x) {
      const int ia = a.neox ? m : 2 * m, ib = a.neox ? m + half : 2 * m + 1;
      const float x0 = ks[ia], x1 = ks[ib], c = cs[2 * m], sn = cs[2 * m + 1];
      const float r0 = __fmaf_rn(x0, c, -__fmul_rn(x1, sn)), r1 = __fmaf_rn(x0, sn, __fmul_rn(x1, c));
      ks[ia] = r0;
      ks[ib] = r1;
      kd[ia] = __float2half_rn(r0);
      kd[ib] = __float2half_rn(r1);
    }
    for (int d = a.n_rot + threadIdx.x; d < D; d += blockDim.x) kd[d] = __float2half_rn(ks[d]);
  } else {
    for (int d = threadIdx.x; d < D; d += blockDim.x) kd[d] = __float2half_rn(ks[d]);
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) vd[d] = __float2half_rn(vs[d]);
}

__global__ void copy_rows_kernel(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  pdl_wait();
  const int64_t n = rows * cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, j = t % cols;
    dst[i * ldd + j] = src[i * lds + j];
  }
}

__global__ void gather_kernel(const kv_t* src, kv_t* dst, const int32_t* rows, int n, int head_dim) {
  pdl_wait();
  const int i = blockIdx.x;
  const int64_t from = static_cast<int64_t>(rows[i]) * head_dim, to = static_cast<int64_t>(i) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) dst[to + d] = src[from + d];
}

__global__ void to_f16_kernel(const float* x, int64_t ldx, f16* y, int64_t ldy, int64_t rows, int64_t cols) {
  pdl_wait();
  const int64_t n = rows * cols;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / cols, j = t % cols;
    y[i * ldy + j] = __float2half_rn(x[i * ldx + j]);
  }
}

}  // namespace

void embed(const void* table, bool f16, const int32_t* tokens, int n, int64_t cols, float scale, float* x, int64_t ldx,
           cudaStream_t s) {
  if (n == 0) return;
  if (f16) {
    launch(embed_kernel<__half>, n, kThreads, 0, s, static_cast<const __half*>(table), tokens, cols, scale, x, ldx);
  } else {
    launch(embed_kernel<bf16>, n, kThreads, 0, s, static_cast<const bf16*>(table), tokens, cols, scale, x, ldx);
  }
  TAPPA_CUDA_LAUNCHED();
}

void rms_norm(const float* x, int64_t ldx, const float* w, float eps, float* out, int64_t ldo, int64_t rows, int64_t cols,
              cudaStream_t s) {
  if (rows == 0) return;
  launch(rms_norm_kernel, static_cast<unsigned>(rows), kNormThreads, 0, s, x, ldx, w, eps, out, ldo, cols);
  TAPPA_CUDA_LAUNCHED();
}

void elementwise(Elementwise op, float* y, int64_t ldy, const float* x, int64_t ldx, float a, int64_t rows, int64_t cols,
                 cudaStream_t s) {
  if (rows * cols == 0) return;
  launch(elementwise_kernel, blocks_for(rows * cols), kThreads, 0, s, op, y, ldy, x, ldx, a, rows, cols);
  TAPPA_CUDA_LAUNCHED();
}

void glu(float* gate, int64_t ldg, const float* up, int64_t ldu, bool gelu, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  launch(glu_kernel, blocks_for(rows * cols), kThreads, 0, s, gate, ldg, up, ldu, gelu, rows, cols);
  TAPPA_CUDA_LAUNCHED();
}

void rope(const float* table, int64_t ldt, float* x, int64_t ldx, int64_t rows, int n_heads, float* x2, int64_t ldx2,
          int n_heads2, int head_dim, int n_rot, bool neox, cudaStream_t s) {
  if (rows == 0 || n_rot == 0) return;
  const int pairs = (n_heads + n_heads2) * (n_rot / 2);
  launch(rope_kernel, dim3(static_cast<unsigned>(rows), (pairs + 127) / 128), 128, 0, s, table, ldt, x, ldx, n_heads, x2,
         ldx2, n_heads2, head_dim, n_rot, neox);
  TAPPA_CUDA_LAUNCHED();
}

void to_bf16(const float* x, int64_t ldx, bf16* y, int64_t ldy, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  launch(to_bf16_kernel, blocks_for(rows * cols), kThreads, 0, s, x, ldx, y, ldy, rows, cols);
  TAPPA_CUDA_LAUNCHED();
}

void random_fill(bf16* dst, int64_t n, uint64_t seed, float step, cudaStream_t s) {
  if (n == 0) return;
  launch(random_fill_kernel, blocks_for(n), kThreads, 0, s, dst, n, seed, step);
  TAPPA_CUDA_LAUNCHED();
}

void argmax_rows(const float* x, int64_t ldx, int64_t rows, int64_t cols, int32_t* ids, cudaStream_t s) {
  if (rows == 0) return;
  launch(argmax_kernel, static_cast<unsigned>(rows), kThreads, 0, s, x, ldx, cols, ids);
  TAPPA_CUDA_LAUNCHED();
}

namespace {
template <int MAXE>
void launch_rope_append(const RopeAppend& r, const AppendEntry* e, int n, const int* lens, cudaStream_t s) {
  RopeAppendT<MAXE> a{};
  a.table = r.table, a.ldt = r.ldt, a.q = r.q, a.ldq = r.ldq, a.n_head = r.n_head;
  a.head_dim = r.head_dim, a.n_rot = r.n_rot, a.neox = r.neox, a.rope = r.rope;
  const int half = r.n_rot / 2;
  a.qy = r.rope && r.q ? (r.n_head * half + 127) / 128 : 0;
  a.q_blocks = static_cast<int>(a.qy * r.q_rows);
  a.lens = lens;
  a.n_entries = n;
  a.max_rows = 0;
  for (int i = 0; i < n; ++i) {
    a.e[i] = e[i];
    a.max_rows = std::max(a.max_rows, e[i].rows);
  }
  const int64_t blocks = a.q_blocks + static_cast<int64_t>(n) * a.max_rows;
  if (blocks == 0) return;
  launch(rope_append_kernel<MAXE>, static_cast<unsigned>(blocks), 128, 0, s, a);
}
}  // namespace

void rope_append(const RopeAppend& r, const AppendEntry* e, const int* lens_host, int n, cudaStream_t s) {
  Gate* gate = gate_of(s);
  int i0 = 0;
  do {
    const int m = std::min(kAppendEntriesMax, n - i0);
    // The lists' lengths before the append: device memory the kernel reads (a graph replays it).
    const int* lens = nullptr;
    if (m > 0) {
      if (gate) {
        lens = gate->dyn(lens_host + i0, static_cast<size_t>(m));
      } else {
        throw Error("rope_append: the stream has no launch gate");
      }
    }
    RopeAppend ri = r;
    if (i0 > 0) ri.q = nullptr;  // the queries once
    if (m <= kAppendEntriesSmall) {
      launch_rope_append<kAppendEntriesSmall>(ri, e + i0, m, lens, s);
    } else {
      launch_rope_append<kAppendEntriesMax>(ri, e + i0, m, lens, s);
    }
    i0 += m;
  } while (i0 < n);
}

void copy_rows(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  launch(copy_rows_kernel, blocks_for(rows * cols), kThreads, 0, s, src, lds, dst, ldd, rows, cols);
}

void gather_rows(const kv_t* src, kv_t* dst, const int32_t* rows, int n, int head_dim, cudaStream_t s) {
  if (n == 0) return;
  launch(gather_kernel, n, 128, 0, s, src, dst, rows, n, head_dim);
  TAPPA_CUDA_LAUNCHED();
}

void to_f16(const float* x, int64_t ldx, f16* y, int64_t ldy, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  launch(to_f16_kernel, blocks_for(rows * cols), kThreads, 0, s, x, ldx, y, ldy, rows, cols);
  TAPPA_CUDA_LAUNCHED();
}

}  // namespace tappa::cuda
