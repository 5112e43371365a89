// Pieces every CUDA file of the backend shares: error checks, bfloat16 helpers, the device context.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace tappa::cuda {

using bf16 = __nv_bfloat16;
using f16 = __half;
// KV cache rows: fp16, as llama.cpp's default cache (three more mantissa bits than bf16; keys and
// values stay far inside its range).
using kv_t = __half;

// Throws tappa::Error naming the failed call, the file and line, and CUDA's message.
[[noreturn]] void fail(const char* what, const std::string& msg, const char* file, int line);

#define TAPPA_CUDA_CHECK(x)                                                                       \
  do {                                                                                            \
    const cudaError_t tappa_e_ = (x);                                                             \
    if (tappa_e_ != cudaSuccess) ::tappa::cuda::fail(#x, cudaGetErrorString(tappa_e_), __FILE__, __LINE__); \
  } while (0)
#define TAPPA_CUBLAS_CHECK(x)                                                                     \
  do {                                                                                            \
    const cublasStatus_t tappa_s_ = (x);                                                          \
    if (tappa_s_ != CUBLAS_STATUS_SUCCESS)                                                        \
      ::tappa::cuda::fail(#x, cublasGetStatusString(tappa_s_), __FILE__, __LINE__);               \
  } while (0)
// After every launch: a bad configuration is reported at the call that made it.
#define TAPPA_CUDA_LAUNCHED() TAPPA_CUDA_CHECK(cudaGetLastError())

// --- CUDA graphs of repeated launch sequences (decode steps) --------------------------------------
//
// Every kernel of the backend is launched through cuda::launch(), which hands it to the stream's
// Gate. The gate cuts the stream's work into regions: the launches between two barriers, a barrier
// being any other stream operation (a copy, an allocation, an event, a synchronization). A region
// whose launches, in order and with every argument byte, equal the previous region's is not
// launched kernel by kernel: the previous region was recorded, and is instantiated once as a CUDA
// graph and replayed with a single cudaGraphLaunch. A decode step is such a region: embedding
// through argmax, ~330 launches at batch 1 for Llama-3.1-8B, ending at the copy of the argmax.
//
// Why replay unchanged rather than capture and update the graph every step: a capture costs about
// what the launches cost, and cudaGraphExecUpdate of a few hundred nodes as much again, all of it
// on the host before the GPU can start the step (the step waits for the previous token). Instead
// the values that change from step to step are not kernel arguments: the token ids, the RoPE rows
// of the step's positions and the KV lists' lengths are written by the host into a per-region
// argument block (Gate::dyn: pinned host memory copied to a fixed device block in one copy before
// the replay) and the kernels read them from there. The kernel arguments are then the same every
// step until a KV list moves (a cache growth reallocates it every few hundred tokens), and the
// check that they are costs one byte comparison per launch. A region that differs from the
// previous one is run eagerly (the launches matched so far are launched first, in order) and
// recorded for the next. The results are the eager launches' results bit for bit: the same
// kernels with the same arguments, in the same order, on the same stream.
//
// TAPPA_CUDA_GRAPHS=0 (or TAPPA_CUDA_PROFILE, which times each op with events) turns it off.
class Gate {
 public:
  explicit Gate(cudaStream_t s);
  ~Gate();
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  bool active() const { return enabled_; }
  // Before any stream operation that is not a cuda::launch (and before reading device results):
  // whatever a replay has skipped so far is launched.
  void barrier();
  // After the stream was synchronized: the argument block can be refilled from its start.
  void synced() { dyn_used_ = dyn_uploaded_ = 0; }
  // n values of T copied to the argument block; returns their device address. In eager mode the
  // copy is queued at once (ahead of the launch that reads it); while a replay is being matched it
  // is held on the host and copied with the whole block before the replay (or before the skipped
  // launches are caught up).
  template <class T>
  const T* dyn(const T* host, size_t n) {
    return static_cast<const T*>(dyn_bytes(host, n * sizeof(T)));
  }
  // Largest argument block a single dyn() takes; larger data goes another way.
  static constexpr size_t kDynMax = size_t{1} << 20;

  // Launch protocol (cuda::launch): absorb() says whether the launch is skipped as part of a
  // replay; otherwise the caller launches it and record()s it.
  std::vector<unsigned char>& sig() { return sig_; }
  bool absorb();
  void record(std::function<void(cudaStream_t)> run);
  // Statistics for the profile line: regions replayed as graphs, and graphs instantiated.
  long replays() const { return replays_; }
  long instantiations() const { return instantiations_; }

 private:
  struct Rec {
    std::vector<unsigned char> sig;
    std::function<void(cudaStream_t)> run;
  };
  const void* dyn_bytes(const void* host, size_t bytes);
  void upload_dyn();
  void catch_up();  // launch prev_[0, cursor_) eagerly; they become the start of the new recording
  void end_region();

  cudaStream_t s_;
  bool enabled_ = false;
  bool replaying_ = true;  // matching the region against prev_ (else: recording into cur_)
  std::vector<Rec> prev_, cur_;
  size_t cursor_ = 0, cur_bytes_ = 0;
  bool overflow_ = false;
  std::vector<unsigned char> sig_;
  cudaGraphExec_t exec_ = nullptr;
  bool exec_failed_ = false;
  unsigned char* dyn_host_ = nullptr;
  unsigned char* dyn_dev_ = nullptr;
  size_t dyn_cap_ = 0, dyn_used_ = 0, dyn_uploaded_ = 0;
  long replays_ = 0, instantiations_ = 0;
};

// The gate of a stream (nullptr: a stream the backend did not make; launches go straight out).
Gate* gate_of(cudaStream_t s);

// --- Programmatic dependent launch (Hopper and later) -------------------------------------------
//
// A decode step at batch 1 is ~330 short kernels, and between two of them the GPU idles: the
// previous grid drains (its last blocks finish while most SMs sit empty), then the next grid is
// launched and its blocks ramp up. With programmatic dependent launch (PDL) every kernel of the
// backend is launched with cudaLaunchAttributeProgrammaticStreamSerialization: the next grid may be
// launched while the previous one still runs, as soon as each of the previous grid's blocks has
// executed griddepcontrol.launch_dependents, and its blocks then wait in griddepcontrol.wait until
// the previous grid has completed and its memory is visible. So the launch and the ramp-up overlap
// the previous kernel's tail, and a kernel may do what does not depend on the previous one (a
// product's first weight loads: weights are constants) before it waits.
//
// The contract that keeps it correct: every kernel launched through cuda::launch() calls
// pdl_wait() before it reads anything an earlier kernel wrote or writes anything an earlier kernel
// reads, and on every path (a block that returns early calls it first too). Since each kernel
// waits for its predecessor's completion, and that one waited for its own, completion is ordered
// down the stream as without PDL. The trigger (launch_dependents) comes right after the wait, so
// at most one grid waits beside a running one. Kernels launched by cuBLAS are launched normally.
// It is off by default: on the H200 it measured no gain at the Llama-3.1-8B shape and a 2.4 % loss at
// Qwen2.5-7B's (batch 1, 4K context, docs/PERFORMANCE.md 2026-12-04); TAPPA_CUDA_PDL=1 turns it on
// (GPUs of compute capability 9.0 and later). Off, kernels are launched without the attribute and
// the two instructions are no-ops, so the contract costs nothing.
bool pdl_enabled();

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Asks bytes [p, p + n) into the L2 cache (Hopper's bulk prefetch, one instruction; p and n
// multiples of 16): a hint, no result depends on it, nothing waits for it. A no-op before sm_90.
__device__ __forceinline__ void l2_prefetch(const void* p, uint32_t n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(n) : "memory");
#endif
}

namespace detail {
template <class T>
void put_bytes(std::vector<unsigned char>& v, const T& x) {
  static_assert(std::is_trivially_copyable_v<T>);
  const size_t n = v.size();
  v.resize(n + sizeof(T));
  std::memcpy(v.data() + n, &x, sizeof(T));
}
template <class... P, class Tup>
void launch_tuple(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Tup& t) {
  std::apply([&](auto&... e) {
    void* a[] = {static_cast<void*>(&e)...};
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl_enabled() ? 1 : 0;
    const cudaError_t err = cudaLaunchKernelExC(&cfg, reinterpret_cast<const void*>(k), a);
    if (err != cudaSuccess) ::tappa::cuda::fail("cudaLaunchKernelExC", cudaGetErrorString(err), __FILE__, __LINE__);
  }, t);
}
}  // namespace detail

// k<<<grid, block, smem, s>>>(args...), through the stream's gate.
template <class... P, class... A>
void launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  using Tup = std::tuple<std::remove_cv_t<std::remove_reference_t<P>>...>;
  Tup t(std::forward<A>(args)...);
  Gate* g = gate_of(s);
  if (!g || !g->active()) {
    detail::launch_tuple(k, grid, block, smem, s, t);
    return;
  }
  std::vector<unsigned char>& sig = g->sig();
  sig.clear();
  detail::put_bytes(sig, k);
  detail::put_bytes(sig, grid);
  detail::put_bytes(sig, block);
  detail::put_bytes(sig, smem);
  std::apply([&](const auto&... e) { (detail::put_bytes(sig, e), ...); }, t);
  if (g->absorb()) return;
  detail::launch_tuple(k, grid, block, smem, s, t);
  g->record([k, grid, block, smem, t](cudaStream_t st) mutable { detail::launch_tuple(k, grid, block, smem, st, t); });
}

// A stream operation other than a kernel (a cuBLAS call), through the stream's gate: `tag` and
// `sig_args` must determine what run(s) does.
template <class F, class... A>
void launch_op(cudaStream_t s, const char* tag, F run, const A&... sig_args) {
  Gate* g = gate_of(s);
  if (!g || !g->active()) {
    run(s);
    return;
  }
  std::vector<unsigned char>& sig = g->sig();
  sig.clear();
  detail::put_bytes(sig, tag);
  (detail::put_bytes(sig, sig_args), ...);
  if (g->absorb()) return;
  run(s);
  g->record(std::function<void(cudaStream_t)>(run));
}

// The device, its stream and library handles, and stream-ordered allocation. Shared (shared_ptr) by
// the backend and the caches it makes, which may outlive it by a little.
struct Context {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_ws = nullptr;  // cuBLAS's workspace, fixed (graph capture allocates nothing)
  Gate* gate = nullptr;

  Context();
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Stream-ordered (cudaMallocAsync on `stream`, from a pool that keeps freed memory): a free
  // takes effect after the work queued before it, so no call here waits for the device.
  void* alloc(size_t bytes);
  void free(void* p);
  void sync();
  // Queued-but-not-launched work that reads or writes cache memory (the backend batches the K/V
  // appends of a layer into one launch): caches call this before they touch their device memory.
  std::function<void()> flush;
  void before_cache_access() {
    if (flush) flush();
    gate->barrier();
  }
};

// A device buffer that grows (stream-ordered) and never shrinks: kernel scratch.
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  template <class T>
  T* get(Context& ctx, size_t n) {
    if (n * sizeof(T) > bytes) {
      if (p) ctx.free(p);
      bytes = n * sizeof(T) + n * sizeof(T) / 4;
      p = ctx.alloc(bytes);
    }
    return static_cast<T*>(p);
  }
  void release(Context& ctx) {
    if (p) ctx.free(p);
    p = nullptr;
    bytes = 0;
  }
};

// fp32 <-> bfloat16 on the host (round to nearest even), as the device's __float2bfloat16_rn.
inline uint16_t host_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>((u >> 16) | ((u & 0xFFFFu) ? 0x40u : 0u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float host_from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace tappa::cuda
