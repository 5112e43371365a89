// The CUDA backend: backend.h's ops on one NVIDIA GPU (see cuda_backend.h).
//
// Memory. Mat data are device pointers; upload/download/copy move them. Everything runs in order on
// one stream; only download(), argmax_rows(), KvCache::read() and synchronize() wait for the device,
// so a decode step queues all its kernels and waits once, for its logits (or argmax).
//
// Weights. prepare_weights copies every matrix once: BF16 matrices (and random-weight models, drawn
// straight into device memory) as bfloat16, every other type dequantized on the host and stored as
// fp16 (three more mantissa bits than bfloat16, so a quantized file's values move less); vectors as
// fp32. The ops find them by the host view's address. Activations are not rounded to 8 bits before
// products with quantized weights as the CPU backend does (llama.cpp's Q8 activations): the GPU
// computes the dequantized model's function (emulating the rounding was tried: it did not bring
// the two engines' top-1 closer, docs/CUDA.md).
//
// Products. Up to kGemvMaxRows activation rows (decoding): gemv.cu, fp32 activations, each row's
// result independent of the batch (Order::PerToken holds). More rows: cuBLAS on 16-bit copies of
// the activations (the weights' type) with fp32 accumulation and output (tensor cores); there the
// order is cuBLAS's, so PerToken is not promised beyond kGemvMaxRows rows.
//
// K/V appends are queued and launched together (one kernel for all sequences of a layer) when the
// next op runs or a cache touches its memory (Context::flush).
//
// TAPPA_CUDA_PROFILE=1 in the environment: each op is timed with CUDA events and a table of the GPU
// time per op is printed to stderr when the backend is destroyed.
//
// Attention: attention.cu (flash-decoding for few rows, tensor-core flash attention for prompts).
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <map>
#include <unordered_map>
#include <vector>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_kv_cache.cuh"
#include "backend/cuda/kernels.cuh"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa {
namespace cuda {

void fail(const char* what, const std::string& msg, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  throw Error("CUDA error: " + msg + " (" + what + " at " + (base ? base + 1 : file) + ":" + std::to_string(line) + ")");
}

Context::Context() {
  int n = 0;
  TAPPA_CUDA_CHECK(cudaGetDeviceCount(&n));
  device = 0;
  TAPPA_CUDA_CHECK(cudaSetDevice(device));
  TAPPA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  TAPPA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  TAPPA_CUBLAS_CHECK(cublasCreate(&cublas));
  TAPPA_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  // A fixed workspace: cuBLAS calls replayed in a CUDA graph allocate nothing.
  constexpr size_t kCublasWorkspace = size_t{32} << 20;
  TAPPA_CUDA_CHECK(cudaMalloc(&cublas_ws, kCublasWorkspace));
  TAPPA_CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_ws, kCublasWorkspace));
  gate = new Gate(stream);
  // The pool keeps freed blocks for reuse instead of returning them to the driver (KV lists grow and
  // shrink every step under decode-time eviction).
  cudaMemPool_t pool;
  TAPPA_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep = UINT64_MAX;
  TAPPA_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
}

Context::~Context() {
  try {
    gate->barrier();
  } catch (...) {
  }
  cudaStreamSynchronize(stream);
  delete gate;
  cublasDestroy(cublas);
  cudaFree(cublas_ws);
  cudaStreamDestroy(stream);
}

void* Context::alloc(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  gate->barrier();
  const cudaError_t e = cudaMallocAsync(&p, bytes, stream);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw Error(ErrorCode::out_of_memory, "CUDA: out of device memory allocating " + std::to_string(bytes >> 20) + " MiB");
  }
  TAPPA_CUDA_CHECK(e);
  return p;
}

void Context::free(void* p) {
  if (!p) return;
  gate->barrier();
  TAPPA_CUDA_CHECK(cudaFreeAsync(p, stream));
}

void Context::sync() {
  gate->barrier();
  TAPPA_CUDA_CHECK(cudaStreamSynchronize(stream));
  gate->synced();
}

}  // namespace cuda

namespace backend {
namespace {

using cuda::bf16;
using cuda::Context;
using cuda::CudaKvCache;
using cuda::f16;

void release_device(float* p) { cudaFree(p); }

struct DevWeight {
  void* p = nullptr;
  bool f16 = false;  // fp16 (dequantized file formats) or bf16
};

// GPU time per op name (TAPPA_CUDA_PROFILE=1).
class Profile {
 public:
  explicit Profile(cudaStream_t s) : s_(s), on_(std::getenv("TAPPA_CUDA_PROFILE") != nullptr) {}
  ~Profile() {
    if (!on_) return;
    resolve();
    double total = 0;
    for (auto& [n, t] : ms_) total += t.first;
    std::fprintf(stderr, "[cuda profile] GPU time per op (all calls of this process), total %.1f ms\n", total);
    for (auto& [n, t] : ms_)
      std::fprintf(stderr, "[cuda profile] %-14s %8d calls %10.2f ms %5.1f %%\n", n.c_str(), t.second, t.first,
                   100 * t.first / std::max(total, 1e-9));
    for (auto& e : free_) cudaEventDestroy(e);
  }
  void begin(const char* name) {
    if (!on_) return;
    cur_ = {name, event(), event()};
    cudaEventRecord(cur_.a, s_);
  }
  void end() {
    if (!on_ || !cur_.name) return;
    cudaEventRecord(cur_.b, s_);
    pending_.push_back(cur_);
    cur_.name = nullptr;
    if (pending_.size() > 4096) resolve();
  }

 private:
  struct Rec {
    const char* name = nullptr;
    cudaEvent_t a{}, b{};
  };
  cudaEvent_t event() {
    if (!free_.empty()) {
      cudaEvent_t e = free_.back();
      free_.pop_back();
      return e;
    }
    cudaEvent_t e;
    cudaEventCreate(&e);
    return e;
  }
  void resolve() {
    cudaStreamSynchronize(s_);
    for (Rec& r : pending_) {
      float ms = 0;
      cudaEventElapsedTime(&ms, r.a, r.b);
      auto& t = ms_[r.name];
      t.first += ms;
      t.second += 1;
      free_.push_back(r.a);
      free_.push_back(r.b);
    }
    pending_.clear();
  }
  cudaStream_t s_;
  bool on_;
  Rec cur_;
  std::vector<Rec> pending_;
  std::vector<cudaEvent_t> free_;
  std::map<std::string, std::pair<double, int>> ms_;
};

struct Timed {
  Profile& p;
  Timed(Profile& pr, const char* name) : p(pr) { p.begin(name); }
  ~Timed() { p.end(); }
};

class CudaBackend final : public Backend {
 public:
  CudaBackend() : ctx_(std::make_shared<Context>()), prof_(ctx_->stream) {
    ctx_->flush = [this] { flush_appends(); };
    const char* f = std::getenv("TAPPA_CUDA_FUSE_NORM");
    fuse_norm_ = !(f && std::string(f) == "0");
    const char* fr = std::getenv("TAPPA_CUDA_FUSE_ROPE");
    fuse_rope_ = !(fr && std::string(fr) == "0");
    const char* pf = std::getenv("TAPPA_CUDA_PREFETCH_MB");
    prefetch_cap_ = (pf ? static_cast<size_t>(std::max(0, std::atoi(pf))) : kPrefetchMiB) << 20;
  }
  ~CudaBackend() override {
    try {
      flush_appends();
      ctx_->gate->barrier();
    } catch (...) {
    }
    ctx_->flush = nullptr;  // caches may outlive the backend: nothing is queued any more
    cudaStreamSynchronize(ctx_->stream);
    if (std::getenv("TAPPA_CUDA_GRAPH_STATS"))
      std::fprintf(stderr, "[cuda graphs] %ld regions replayed as graphs, %ld graphs instantiated%s\n",
                   ctx_->gate->replays(), ctx_->gate->instantiations(), ctx_->gate->active() ? "" : " (graphs off)");
    for (auto& [k, w] : mats_) ctx_->free(w.p);
    for (auto& [k, w] : random_mats_) ctx_->free(w.p);
    for (auto& [k, p] : vecs_) ctx_->free(p);
    for (cuda::Scratch* s : {&xb_, &qb_, &tok_, &tmp_, &probs_, &ids_, &table_}) s->release(*ctx_);
    decode_.part.release(*ctx_);
    decode_.cnt.release(*ctx_);
  }

  std::string name() const override { return "cuda"; }
  int n_threads() const override { return 1; }
  bool host_visible() const override { return false; }
  void synchronize() override {
    flush_appends();
    ctx_->sync();
  }

  void prepare_weights(std::span<const WeightView> matrices, std::span<const VectorView> vectors) override;

  Buffer alloc(size_t n) override {
    if (n == 0) return {};
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, n * sizeof(float));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw Error(ErrorCode::out_of_memory, "CUDA: out of device memory allocating " + std::to_string((n * 4) >> 20) + " MiB");
    }
    TAPPA_CUDA_CHECK(e);
    ctx_->gate->barrier();
    TAPPA_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(float), ctx_->stream));
    return Buffer(static_cast<float*>(p), n, release_device);
  }
  void upload(const float* host, Mat dst) override {
    flush_appends();
    if (dst.rows == 0) return;
    ctx_->gate->barrier();
    TAPPA_CUDA_CHECK(cudaMemcpy2DAsync(dst.data, dst.ld * 4, host, dst.cols * 4, dst.cols * 4, dst.rows,
                                       cudaMemcpyHostToDevice, ctx_->stream));
  }
  void download(const Mat& src, float* host) override {
    flush_appends();
    if (src.rows == 0) return;
    ctx_->gate->barrier();
    TAPPA_CUDA_CHECK(cudaMemcpy2DAsync(host, src.cols * 4, src.data, src.ld * 4, src.cols * 4, src.rows,
                                       cudaMemcpyDeviceToHost, ctx_->stream));
    ctx_->sync();
  }
  void copy(const Mat& src, Mat dst) override {
    flush_appends();
    if (src.rows == 0) return;
    ctx_->gate->barrier();
    TAPPA_CUDA_CHECK(cudaMemcpy2DAsync(dst.data, dst.ld * 4, src.data, src.ld * 4, src.cols * 4, src.rows,
                                       cudaMemcpyDeviceToDevice, ctx_->stream));
  }
  using Backend::new_cache;
  std::unique_ptr<KvCache> new_cache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format) override {
    // The device cache has one storage, fp16 K and V (read back as fp32); the host formats of
    // docs/KV_FORMATS.md (q8_0, q4_0, rotations) have no device kernels yet.
    if (!format.is_f32())
      throw Error("cuda backend: KV cache format " + kv_format_name(format) +
                  " is not supported (the device cache stores K and V as f16); use the default");
    return std::make_unique<CudaKvCache>(ctx_, n_layer, n_head_kv, head_dim);
  }

  void embed(const WeightView& table, std::span<const int32_t> tokens, float scale, Mat x) override {
    flush_appends();
    Timed t_(prof_, "embed");
    const DevWeight& w = weight(table);
    const int n = static_cast<int>(tokens.size());
    // The ids through the argument block (a replayed decode step embeds the step's token).
    const int32_t* t = nullptr;
    if (n * sizeof(int32_t) <= cuda::Gate::kDynMax) {
      t = ctx_->gate->dyn(tokens.data(), static_cast<size_t>(n));
    } else {
      int32_t* d = tok_.get<int32_t>(*ctx_, std::max(n, 1));
      ctx_->gate->barrier();
      TAPPA_CUDA_CHECK(cudaMemcpyAsync(d, tokens.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice, ctx_->stream));
      t = d;
    }
    cuda::embed(w.p, w.f16, t, n, x.cols, scale, x.data, x.ld, ctx_->stream);
  }
  // Decode rows: deferred, and fused into the product that follows when it reads `out` (the
  // norm's scale is then applied to the products' sums, gemv.cu); any other op launches it first.
  void rms_norm(const Mat& x, const float* w, float eps, Mat out) override {
    flush_appends();
    const float* dw = vec(w);
    const bool apart = out.data + out.rows * out.ld <= x.data || x.data + x.rows * x.ld <= out.data;
    if (fuse_norm_ && x.rows > 0 && x.rows <= cuda::kGemvMaxRows && apart && x.cols % 8 == 0 &&
        cuda::gemv_fits(x.data, x.ld, static_cast<int>(x.cols)) && cuda::gemv_fits(dw, 0, static_cast<int>(x.cols))) {
      norm_ = {true, x, dw, eps, out};
      return;
    }
    Timed t_(prof_, "rms_norm");
    cuda::rms_norm(x.data, x.ld, dw, eps, out.data, out.ld, x.rows, x.cols, ctx_->stream);
  }
  void matmul(const WeightView& w, const Mat& x, Mat y, Order order) override {
    const WeightView* ws[1] = {&w};
    const Mat ys[1] = {y};
    products(ws, x, ys, cuda::GemvMode::Store);
  }
  void matmul_many(std::span<const WeightView* const> ws, const Mat& x, std::span<const Mat> ys, Order) override {
    products(ws, x, ys, cuda::GemvMode::Store);
  }
  void matmul_add(const WeightView& w, const Mat& x, Mat y, Mat tmp, Order) override {
    const WeightView* ws[1] = {&w};
    const Mat ys[1] = {y};
    products(ws, x, ys, cuda::GemvMode::Accumulate);
  }
  void matmul_glu(const WeightView& wg, const WeightView& wu, const Mat& x, Mat gate, Mat up, FfnActivation act,
                  Order) override {
    const bool gelu = act == FfnActivation::GeluTanh;
    const DevWeight& g = weight(wg);
    const DevWeight& u = weight(wu);
    if (x.rows <= cuda::kGemvMaxRows && cuda::gemv_fits(x.data, x.ld, static_cast<int>(x.cols)) && g.f16 == u.f16) {
      Mat xs = x;
      cuda::GemvNorm gn;
      const bool fused = take_norm(x, xs, gn);
      flush_appends();
      Timed t_(prof_, "gemv_glu");
      cuda::GemvSeg seg{g.p, u.p, gate.data, gate.ld, static_cast<int>(wg.rows)};
      cuda::gemv(&seg, 1, gelu ? cuda::GemvMode::GluGelu : cuda::GemvMode::GluSilu, g.f16, xs.data, xs.ld,
                 static_cast<int>(x.rows), static_cast<int>(x.cols), ctx_->stream, fused ? &gn : nullptr);
      return;
    }
    flush_appends();
    const WeightView* ws[2] = {&wg, &wu};
    const Mat ys[2] = {gate, up};
    products(ws, x, ys, cuda::GemvMode::Store);
    Timed t_(prof_, "glu");
    cuda::glu(gate.data, gate.ld, up.data, up.ld, gelu, gate.rows, gate.cols, ctx_->stream);
  }
  void add_bias(Mat y, const float* bias) override {
    flush_appends();
    Timed t_(prof_, "elementwise");
    cuda::elementwise(cuda::Elementwise::AddBias, y.data, y.ld, vec(bias), 0, 0.0f, y.rows, y.cols, ctx_->stream);
  }
  void add(Mat y, const Mat& x) override {
    flush_appends();
    Timed t_(prof_, "elementwise");
    cuda::elementwise(cuda::Elementwise::Add, y.data, y.ld, x.data, x.ld, 0.0f, y.rows, y.cols, ctx_->stream);
  }
  void scale(Mat y, float s) override {
    flush_appends();
    Timed t_(prof_, "elementwise");
    cuda::elementwise(cuda::Elementwise::Scale, y.data, y.ld, nullptr, 0, s, y.rows, y.cols, ctx_->stream);
  }
  void glu(Mat gate, const Mat& up, FfnActivation act) override {
    flush_appends();
    Timed t_(prof_, "glu");
    cuda::glu(gate.data, gate.ld, up.data, up.ld, act == FfnActivation::GeluTanh, gate.rows, gate.cols, ctx_->stream);
  }
  void softcap(Mat y, float cap) override {
    flush_appends();
    Timed t_(prof_, "elementwise");
    cuda::elementwise(cuda::Elementwise::Softcap, y.data, y.ld, nullptr, 0, cap, y.rows, y.cols, ctx_->stream);
  }
  void rope_table(const Rope& r, std::span<const int64_t> positions, Mat table) override;
  void rope(const Rope& r, const Mat& table, Mat x, int n_heads) override {
    flush_appends();
    Timed t_(prof_, "rope");
    cuda::rope(table.data, table.ld, x.data, x.ld, x.rows, n_heads, nullptr, 0, 0, r.head_dim, r.n_rot, r.neox,
               ctx_->stream);
  }
  // Deferred: the next op launches it, fused into the K/V appends when they come first and append
  // exactly the rotated key rows (rope_append), else on its own.
  void rope_qk(const Rope& r, const Mat& table, Mat q, int n_head, Mat k, int n_head_kv) override {
    flush_appends();
    if (q.rows == 0) return;
    if (!fuse_rope_) {
      Timed t_(prof_, "rope");
      cuda::rope(table.data, table.ld, q.data, q.ld, q.rows, n_head, k.data, k.ld, n_head_kv, r.head_dim, r.n_rot, r.neox,
                 ctx_->stream);
      return;
    }
    rope_.on = true;
    rope_.r = cuda::RopeAppend{true, table.data, table.ld, q.data, q.ld, q.rows, n_head, r.head_dim, r.n_rot, r.neox};
    rope_.k = k.data;
    rope_.ldk = k.ld;
    rope_.n_head_kv = n_head_kv;
  }
  void kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v) override;
  void attention(const AttentionCall& c, const Mat& q, Mat out) override;
  void argmax_rows(const Mat& logits, int32_t* ids) override {
    flush_appends();
    int32_t* d = ids_.get<int32_t>(*ctx_, std::max<int64_t>(logits.rows, 1));
    cuda::argmax_rows(logits.data, logits.ld, logits.rows, logits.cols, d, ctx_->stream);
    ctx_->gate->barrier();  // the end of a decode step: a replay launches here
    TAPPA_CUDA_CHECK(cudaMemcpyAsync(ids, d, logits.rows * sizeof(int32_t), cudaMemcpyDeviceToHost, ctx_->stream));
    ctx_->sync();
  }

 private:
  const DevWeight& weight(const WeightView& w) const {
    if (w.data) {
      const auto it = mats_.find(w.data);
      if (it != mats_.end()) return it->second;
    } else {
      const auto it = random_mats_.find(w.random_seed);
      if (it != random_mats_.end()) return it->second;
    }
    throw Error("CUDA backend: a weight matrix was not handed to prepare_weights");
  }
  const float* vec(const float* host) const {
    const auto it = vecs_.find(host);
    if (it == vecs_.end()) throw Error("CUDA backend: a weight vector was not handed to prepare_weights");
    return it->second;
  }
  CudaKvCache& cuda_cache(KvCache& c) const {
    auto* cc = dynamic_cast<CudaKvCache*>(&c);
    if (!cc) throw Error("CUDA backend: the sequence's KV cache was not made by this backend");
    return *cc;
  }
  // ys[i] = x · ws[i]ᵀ (Store) or ys[i] += (Accumulate).
  void products(std::span<const WeightView* const> ws, const Mat& x, std::span<const Mat> ys, cuda::GemvMode mode);
  // Launches the deferred RoPE and K/V appends (rope_append: fused when the appends cover exactly
  // the rotated key rows, each once).
  void flush_appends() {
    if (norm_.on) {
      norm_.on = false;
      Timed t_(prof_, "rms_norm");
      cuda::rms_norm(norm_.x.data, norm_.x.ld, norm_.w, norm_.eps, norm_.out.data, norm_.out.ld, norm_.x.rows,
                     norm_.x.cols, ctx_->stream);
    }
    if (!rope_.on && pending_.empty()) return;
    bool fuse = rope_.on && !pending_.empty();
    if (fuse) {
      const int64_t rows = rope_.r.q_rows, D = rope_.r.head_dim;
      std::vector<char>& seen = seen_;
      seen.assign(static_cast<size_t>(rows * rope_.n_head_kv), 0);
      int64_t covered = 0;
      for (const cuda::AppendEntry& e : pending_) {
        const int64_t off = e.k - rope_.k;
        if (e.row < 0 || e.ldk != rope_.ldk || off < 0) {
          fuse = false;
          break;
        }
        const int64_t col = off - static_cast<int64_t>(e.row) * rope_.ldk;
        if (col < 0 || col % D != 0 || col / D >= rope_.n_head_kv || e.row + e.rows > rows) {
          fuse = false;
          break;
        }
        for (int i = 0; i < e.rows && fuse; ++i) {
          char& c = seen[static_cast<size_t>((e.row + i) * rope_.n_head_kv + col / D)];
          fuse = c == 0;
          c = 1;
        }
        covered += e.rows;
      }
      fuse = fuse && covered == rows * rope_.n_head_kv;
    }
    if (rope_.on && !fuse) {
      Timed t_(prof_, "rope");
      const cuda::RopeAppend& r = rope_.r;
      cuda::rope(r.table, r.ldt, r.q, r.ldq, r.q_rows, r.n_head, rope_.k, rope_.ldk, rope_.n_head_kv, r.head_dim, r.n_rot,
                 r.neox, ctx_->stream);
    }
    if (fuse || !pending_.empty()) {
      Timed t_(prof_, fuse ? "rope_append" : "kv_append");
      cuda::RopeAppend r = fuse ? rope_.r : cuda::RopeAppend{};
      if (!fuse) r.head_dim = pending_head_dim_;
      cuda::rope_append(r, pending_.data(), pending_lens_.data(), static_cast<int>(pending_.size()), ctx_->stream);
    }
    rope_.on = false;
    pending_.clear();
    pending_lens_.clear();
  }

  std::shared_ptr<Context> ctx_;
  Profile prof_;
  std::unordered_map<const void*, DevWeight> mats_;
  std::unordered_map<uint64_t, DevWeight> random_mats_;
  std::unordered_map<const void*, float*> vecs_;
  cuda::Scratch xb_, qb_, tok_, tmp_, probs_, ids_, table_;
  std::vector<cuda::AppendEntry> pending_;
  std::vector<int> pending_lens_;  // each entry's list length before its append
  int pending_head_dim_ = 0;
  struct PendingRope {
    bool on = false;
    cuda::RopeAppend r;  // the queries' part, and the table
    float* k = nullptr;
    int64_t ldk = 0;
    int n_head_kv = 0;
  } rope_;
  std::vector<char> seen_;
  struct PendingNorm {
    bool on = false;
    Mat x;
    const float* w = nullptr;
    float eps = 0.0f;
    Mat out;
  } norm_;
  bool fuse_norm_ = true, fuse_rope_ = true;
  // The pending norm, if the product about to run on the GEMV path reads its output: taken (the
  // product fuses it) and returned as the raw input and the norm's parameters.
  bool take_norm(const Mat& x, Mat& raw, cuda::GemvNorm& gn) {
    if (!norm_.on || norm_.out.data != x.data || norm_.out.ld != x.ld || norm_.out.rows != x.rows ||
        norm_.out.cols != x.cols)
      return false;
    norm_.on = false;
    raw = norm_.x;
    gn = cuda::GemvNorm{norm_.w, norm_.eps, norm_.out.data, norm_.out.ld};
    return true;
  }

  cuda::DecodeScratch decode_;
  // L2 prefetch during the decode attention (attention_rows' prefetch): the weights of the GEMV
  // that followed the attention of each layer last time (learned: a decode step repeats the same
  // ops), at most prefetch_cap_ bytes of them (TAPPA_CUDA_PREFETCH_MB; 0 turns it off). A hint only:
  // no result depends on it.
  static constexpr size_t kPrefetchMiB = 0;
  size_t prefetch_cap_ = 0;
  std::vector<std::pair<const void*, size_t>> after_attn_;
  int attn_layer_ = -1;  // the layer of the decode attention just launched, until the next product
  std::vector<float> host_table_;
  std::vector<cuda::AttnList> lists_;
  std::vector<float> host_probs_;
};

void CudaBackend::prepare_weights(std::span<const WeightView> matrices, std::span<const VectorView> vectors) {
  flush_appends();
  ctx_->gate->barrier();
  std::vector<float> row;
  std::vector<uint16_t> staging;
  for (const WeightView& w : matrices) {
    const size_t n = static_cast<size_t>(w.rows) * w.cols;
    if (!w.data) {
      if (w.random_seed == 0) throw Error("CUDA backend: a weight matrix has neither data nor a random seed");
      if (random_mats_.count(w.random_seed)) continue;
      auto* d = static_cast<bf16*>(ctx_->alloc(n * sizeof(bf16)));
      cuda::random_fill(d, static_cast<int64_t>(n), w.random_seed, w.random_step, ctx_->stream);
      random_mats_[w.random_seed] = DevWeight{d, false};
      continue;
    }
    if (mats_.count(w.data)) continue;  // tied output head: the embedding table again
    void* d = ctx_->alloc(n * 2);
    const bool as_f16 = w.type != TensorType::BF16;
    if (w.type == TensorType::BF16) {
      TAPPA_CUDA_CHECK(cudaMemcpyAsync(d, w.data, n * 2, cudaMemcpyHostToDevice, ctx_->stream));
    } else {
      // Dequantize on the host, a slab of rows at a time (64 MiB of bf16 staging at most).
      const size_t rb = quant::row_bytes(w.type, w.cols);
      const int64_t slab = std::max<int64_t>(1, (int64_t{32} << 20) / std::max<int64_t>(w.cols, 1));
      row.resize(static_cast<size_t>(w.cols));
      for (int64_t r0 = 0; r0 < w.rows; r0 += slab) {
        const int64_t nr = std::min(slab, w.rows - r0);
        staging.resize(static_cast<size_t>(nr * w.cols));
        for (int64_t r = 0; r < nr; ++r) {
          quant::dequantize_row(w.type, w.data + rb * (r0 + r), row.data(), w.cols);
          for (int64_t j = 0; j < w.cols; ++j)
            staging[r * w.cols + j] = as_f16 ? quant::fp32_to_fp16(row[j]) : cuda::host_to_bf16(row[j]);
        }
        // Pageable source: the copy takes the bytes before it returns, so the staging can be refilled.
        TAPPA_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint16_t*>(d) + r0 * w.cols, staging.data(),
                                         staging.size() * 2, cudaMemcpyHostToDevice, ctx_->stream));
      }
    }
    mats_[w.data] = DevWeight{d, as_f16};
  }
  for (const VectorView& v : vectors) {
    if (!v.data || vecs_.count(v.data)) continue;
    auto* d = static_cast<float*>(ctx_->alloc(static_cast<size_t>(v.n) * sizeof(float)));
    TAPPA_CUDA_CHECK(cudaMemcpyAsync(d, v.data, v.n * sizeof(float), cudaMemcpyHostToDevice, ctx_->stream));
    vecs_[v.data] = d;
  }
  ctx_->sync();
}

void CudaBackend::products(std::span<const WeightView* const> ws, const Mat& x, std::span<const Mat> ys,
                           cuda::GemvMode mode) {
  const int k = static_cast<int>(x.cols);
  // A pending RMSNorm whose output is x goes into the first product (it writes x as well).
  Mat raw = x;
  cuda::GemvNorm gn;
  bool fused = mode != cuda::GemvMode::Accumulate && x.rows <= cuda::kGemvMaxRows && cuda::gemv_fits(x.data, x.ld, k) &&
               take_norm(x, raw, gn);
  flush_appends();
  if (x.rows == 0) return;
  // Runs of weights of one storage type go together.
  for (size_t i0 = 0; i0 < ws.size();) {
    const DevWeight& w0 = weight(*ws[i0]);
    size_t i1 = i0 + 1;
    while (i1 < ws.size() && weight(*ws[i1]).f16 == w0.f16) ++i1;
    const Mat& xs = x;
    if (x.rows <= cuda::kGemvMaxRows && cuda::gemv_fits(xs.data, xs.ld, k)) {
      if (attn_layer_ >= 0) {  // the product after a decode attention: its weights, for the next step's prefetch
        if (after_attn_.size() <= static_cast<size_t>(attn_layer_)) after_attn_.resize(attn_layer_ + 1);
        after_attn_[attn_layer_] = {w0.p, static_cast<size_t>(ws[i0]->rows) * k * 2};
      }
      attn_layer_ = -1;
      Timed t_(prof_, mode == cuda::GemvMode::Accumulate ? "gemv_add" : i1 - i0 > 1 ? "gemv_many" : "gemv");
      for (size_t j0 = i0; j0 < i1; j0 += 3) {
        cuda::GemvSeg segs[3];
        const int n = static_cast<int>(std::min<size_t>(3, i1 - j0));
        for (int j = 0; j < n; ++j)
          segs[j] = {weight(*ws[j0 + j]).p, nullptr, ys[j0 + j].data, ys[j0 + j].ld, static_cast<int>(ws[j0 + j]->rows)};
        if (fused) {
          cuda::gemv(segs, n, mode, w0.f16, raw.data, raw.ld, static_cast<int>(x.rows), k, ctx_->stream, &gn);
          fused = false;
        } else {
          cuda::gemv(segs, n, mode, w0.f16, xs.data, xs.ld, static_cast<int>(x.rows), k, ctx_->stream);
        }
      }
    } else {
      Timed t_(prof_, "cublas");
      // cuBLAS: 16-bit activations of the weights' type (one conversion for the run), fp32
      // accumulate and output.
      void* xb = xb_.get<uint16_t>(*ctx_, static_cast<size_t>(x.rows * x.cols));
      if (w0.f16) {
        cuda::to_f16(xs.data, xs.ld, static_cast<f16*>(xb), x.cols, x.rows, x.cols, ctx_->stream);
      } else {
        cuda::to_bf16(xs.data, xs.ld, static_cast<bf16*>(xb), x.cols, x.rows, x.cols, ctx_->stream);
      }
      const cudaDataType_t type = w0.f16 ? CUDA_R_16F : CUDA_R_16BF;
      const float beta = mode == cuda::GemvMode::Accumulate ? 1.0f : 0.0f;
      for (size_t i = i0; i < i1; ++i) {
        const WeightView& w = *ws[i];
        // Row-major y[M][N] = x[M][K] · W[N][K]ᵀ is column-major yᵀ (N x M) = op(W as K x N)ᵀ · xᵀ.
        // Through the gate (a replayed step replays it; the handle's workspace is fixed).
        cublasHandle_t h = ctx_->cublas;
        const int N = static_cast<int>(w.rows), M = static_cast<int>(x.rows), ldy = static_cast<int>(ys[i].ld);
        const void* wp = weight(w).p;
        const void* xp = xb;
        float* yp = ys[i].data;
        cuda::launch_op(ctx_->stream, "cublasGemmEx", [=](cudaStream_t) {
          const float alpha = 1.0f, b = beta;
          TAPPA_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, k, &alpha, wp, type, k, xp, type, k, &b, yp,
                                          CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }, h, N, M, k, wp, type, xp, beta, yp, ldy);
      }
    }
    i0 = i1;
  }
}

// The table is computed on the host with the reference backend's arithmetic (angles by repeated fp32
// multiplication, libm's cos and sin), then copied: positions x n_rot floats per call.
void CudaBackend::rope_table(const Rope& r, std::span<const int64_t> positions, Mat table) {
  host_table_.resize(positions.size() * static_cast<size_t>(r.n_rot));
  const float theta_scale = std::pow(r.base, -2.0f / static_cast<float>(r.n_rot));
  for (size_t p = 0; p < positions.size(); ++p) {
    float* cs = host_table_.data() + p * r.n_rot;
    float theta = static_cast<float>(positions[p]);
    for (int i = 0; i < r.n_rot / 2; ++i) {
      if (r.inv_freq) {
        const double t = static_cast<double>(positions[p]) * r.inv_freq[i];
        cs[2 * i] = static_cast<float>(std::cos(t));
        cs[2 * i + 1] = static_cast<float>(std::sin(t));
        continue;
      }
      float t = theta;
      if (r.freq_factors) t /= r.freq_factors[i];
      t *= r.freq_scale;
      cs[2 * i] = std::cos(t);
      cs[2 * i + 1] = std::sin(t);
      theta *= theta_scale;
    }
  }
  const int64_t rows = static_cast<int64_t>(positions.size());
  if (host_table_.size() * sizeof(float) <= cuda::Gate::kDynMax) {
    // Through the argument block and a copy kernel: a replayed decode step gets its positions' rows.
    flush_appends();
    const float* d = ctx_->gate->dyn(host_table_.data(), host_table_.size());
    cuda::copy_rows(d, r.n_rot, table.data, table.ld, rows, r.n_rot, ctx_->stream);
    return;
  }
  upload(host_table_.data(), Mat{table.data, rows, r.n_rot, table.ld});
}

void CudaBackend::kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v) {
  CudaKvCache& c = cuda_cache(cache);
  const int n = static_cast<int>(k.rows), D = c.head_dim();
  if (!pending_.empty() && pending_head_dim_ != D) flush_appends();
  pending_head_dim_ = D;
  for (int h = 0; h < c.n_head_kv(); ++h) {
    c.reserve_list(layer, h, n);  // may reallocate: queued appends (and the RoPE) are launched first
    const CudaKvCache::List& l = c.list(layer, h);
    const float* kp = k.data + static_cast<int64_t>(h) * D;
    // Row of the pending RoPE's keys these rows start at (-1: not its keys).
    int row = -1;
    if (rope_.on && k.ld == rope_.ldk && kp >= rope_.k) row = static_cast<int>((kp - rope_.k) / rope_.ldk);
    pending_.push_back({kp, v.data + static_cast<int64_t>(h) * D, k.ld, v.ld, l.k, l.v(D), n, row});
    pending_lens_.push_back(l.length);
    c.advance(layer, h, n);
  }
}

void CudaBackend::attention(const AttentionCall& c, const Mat& q, Mat out) {
  flush_appends();
  const int G = c.n_head / c.n_head_kv, D = c.head_dim;
  const cuda::AttnShape sh{G, D, c.scale, c.window};
  lists_.clear();
  std::vector<cuda::AttnList>& rows_lists = lists_;
  // Prompts of many rows go through the tensor-core kernel one sequence at a time; the rest (decode
  // rows, short chunks) together through flash-decoding.
  bool converted = false;
  f16* qb = nullptr;
  std::vector<cuda::AttnList> seq_lists(c.n_head_kv);
  std::vector<cuda::AttnList> all;  // every list, for the taps
  for (const AttentionSeq& s : c.seqs) {
    CudaKvCache& cc = cuda_cache(*s.cache);
    for (int h = 0; h < c.n_head_kv; ++h) {
      const CudaKvCache::List& l = cc.list(c.layer, h);
      seq_lists[h] = {l.k, l.v(D), l.length, s.n_rows, static_cast<int>(s.row0), h, l.capacity};
      if (c.taps) all.push_back(seq_lists[h]);
    }
    if (s.n_rows >= 32 && cuda::flash_supported(D)) {
      if (!converted) {
        qb = qb_.get<f16>(*ctx_, static_cast<size_t>(q.rows * q.cols));
        cuda::to_f16(q.data, q.ld, qb, q.cols, q.rows, q.cols, ctx_->stream);
        converted = true;
      }
      Timed t_(prof_, "attn_flash");
      cuda::attention_flash(seq_lists.data(), c.n_head_kv, sh, qb + s.row0 * q.cols, q.cols, out.data + s.row0 * out.ld,
                            out.ld, ctx_->stream);
    } else {
      rows_lists.insert(rows_lists.end(), seq_lists.begin(), seq_lists.end());
    }
  }
  attn_layer_ = -1;
  if (!rows_lists.empty()) {
    // Few query rows (the products after it take the GEMV path): the memory is mostly idle during
    // the attention, so it prefetches the next product's weights.
    int64_t rows = 0;
    for (const AttentionSeq& s : c.seqs) rows += s.n_rows;
    const void* pf = nullptr;
    size_t pf_bytes = 0;
    if (prefetch_cap_ > 0 && rows <= cuda::kGemvMaxRows) {
      attn_layer_ = c.layer;
      if (static_cast<size_t>(c.layer) < after_attn_.size()) {
        pf = after_attn_[c.layer].first;
        pf_bytes = std::min(after_attn_[c.layer].second, prefetch_cap_);
      }
    }
    Timed t_(prof_, "attn_decode");
    cuda::attention_rows(rows_lists.data(), static_cast<int>(rows_lists.size()), sh, q.data, q.ld, out.data, out.ld,
                         ctx_->prop.multiProcessorCount, decode_, *ctx_, pf, pf_bytes);
  }
  if (!c.taps) return;
  // The rows the taps want, computed again as explicit probabilities and handed over on the host.
  std::vector<cuda::ProbTriple> triples;
  struct Want {
    int seq, head, row, n;
  };
  std::vector<Want> wants;
  int longest = 0;
  for (size_t si = 0; si < c.seqs.size(); ++si) {
    const AttentionSeq& s = c.seqs[si];
    for (int i = 0; i < s.n_rows; ++i)
      for (int h = 0; h < c.n_head; ++h) {
        if (!c.taps->wants(s.seq, h, i)) continue;
        const int li = static_cast<int>(si) * c.n_head_kv + h / G;
        const int n_vis = all[li].len - s.n_rows + i + 1;
        triples.push_back({li, i, h % G});
        wants.push_back({s.seq, h, i, n_vis});
        longest = std::max(longest, n_vis);
      }
  }
  if (triples.empty()) return;
  // In batches that keep the probability buffer under 256 MiB.
  const size_t per_batch = std::max<size_t>(1, (size_t{64} << 20) / std::max(longest, 1));
  for (size_t t0 = 0; t0 < triples.size(); t0 += per_batch) {
    const size_t n = std::min(per_batch, triples.size() - t0);
    float* p = probs_.get<float>(*ctx_, n * static_cast<size_t>(longest));
    cuda::attention_probs(all.data(), triples.data() + t0, static_cast<int>(n), sh, q.data, q.ld, p, longest, *ctx_, tmp_);
    host_probs_.resize(n * static_cast<size_t>(longest));
    ctx_->gate->barrier();
    TAPPA_CUDA_CHECK(cudaMemcpyAsync(host_probs_.data(), p, host_probs_.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                     ctx_->stream));
    ctx_->sync();
    for (size_t t = 0; t < n; ++t) {
      const Want& w = wants[t0 + t];
      c.taps->on_row(w.seq, w.head, w.row, host_probs_.data() + t * longest, w.n);
    }
  }
}

}  // namespace

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
  }
  if (n == 0) return "no CUDA device";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "cannot query CUDA device 0";
  if (p.major < 8) return std::string("CUDA device 0 (") + p.name + ") is older than compute capability 8.0 (bf16 tensor cores)";
  return "";
}

std::unique_ptr<Backend> make_cuda_backend() {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) throw Error("cuda backend: " + why);
  return std::make_unique<CudaBackend>();
}

}  // namespace backend
}  // namespace tappa
