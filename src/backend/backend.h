// The device-neutral operations a decoder's forward pass is made of. The model code (engine/forward.cpp)
// is a list of calls to these; each backend (backend/cpu: the fast kernels and their thread pool;
// backend/reference: plain scalar loops, the yardstick of the parity test; backend/cuda: an NVIDIA GPU) decides
// how to run them, on which threads, in which summation order, with which scratch memory.
//
// Data. Activations are fp32 matrices in the backend's memory (`Mat`: rows = tokens, cols =
// features). Weights are the model's views into the mapped GGUF file (`WeightView`, and plain float
// pointers for norms and biases); a backend that keeps its own copies (a GPU) finds them by address. KV caches are made by the
// backend (`new_cache`) and read by its attention op directly, one list per (layer, KV head), each
// list with its own length (compressed caches are ragged).
//
// Summation orders. The CPU backend reproduces llama.cpp's CPU order bit for bit where the tests say
// so (docs/ORACLE.md); the reference backend is written for reading, and the parity test
// (tests/backend_parity_test.cpp) states, op by op, where the two agree bit for bit and where only
// within a bound.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quant/weight_view.h"
#include "tappa/kv_cache.h"
#include "tappa/model.h"

namespace tappa::backend {

// A small fp32 vector of the model (a norm's weights, a bias) in host memory.
struct VectorView {
  const float* data = nullptr;
  int64_t n = 0;
};

// A row-major fp32 matrix in backend memory; rows `ld` floats apart (ld >= cols).
struct Mat {
  float* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;

  Mat row_range(int64_t first, int64_t n) const { return {data + first * ld, n, cols, ld}; }
  Mat col_range(int64_t first, int64_t n) const { return {data + first, rows, n, ld}; }
  // The same memory seen as rows of `width` floats (a contiguous matrix only): e.g. [n][H*d] as
  // [n*H][d], one head per row (QK-norm normalises each head on its own).
  Mat reshaped(int64_t width) const { return {data, rows * cols / width, width, width}; }
  bool empty() const { return rows == 0; }
};

// Memory from a backend, freed by it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(float* data, size_t n, void (*release)(float*)) : data_(data), n_(n), release_(release) {}
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = o.data_, n_ = o.n_, release_ = o.release_;
      o.data_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  ~Buffer() { reset(); }
  float* data() const { return data_; }
  size_t size() const { return n_; }
  Mat mat(int64_t rows, int64_t cols) const { return {data_, rows, cols, cols}; }

 private:
  void reset() {
    if (data_ && release_) release_(data_);
    data_ = nullptr;
  }
  float* data_ = nullptr;
  size_t n_ = 0;
  void (*release_)(float*) = nullptr;
};

// RoPE of one kind of layer: the model's rotation (global layers) or the local layers' own base.
struct Rope {
  int n_rot = 0;
  int head_dim = 0;
  float base = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // [n_rot/2] or nullptr (Llama 3)
  bool neox = false;                    // pairs (i, i + n_rot/2) instead of (2i, 2i+1)
  const float* inv_freq = nullptr;      // explicit angular frequencies (analysis interventions)
};

// The rows of one sequence in an attention call: rows [row0, row0 + n_rows) of q / out, whose keys and
// values were appended to `cache` (the last n_rows rows of every list of the layer). Row i of the
// sequence sees its list's rows up to and including its own.
struct AttentionSeq {
  KvCache* cache = nullptr;
  int64_t row0 = 0;
  int n_rows = 0;
  int seq = 0;  // index handed back to the taps
};

// Attention probabilities a caller wants to see (observers, a KV policy's decode hook). wants() and
// on_row() may be called from several threads at once, for different (seq, head, row).
class AttentionTaps {
 public:
  virtual ~AttentionTaps() = default;
  virtual bool wants(int seq, int head, int row) = 0;
  // probs[0..n): softmax weights over the KV head's list rows (zeros before a window's first row).
  virtual void on_row(int seq, int head, int row, const float* probs, int n) = 0;
};

struct AttentionCall {
  int layer = 0;
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  float scale = 1.0f;  // applied to q·k
  int window = 0;      // > 0: a query sees only the newest `window` rows of its list (sliding window)
  std::span<const AttentionSeq> seqs;
  AttentionTaps* taps = nullptr;
};

// Summation order of a multi-row matrix product (see cpu::MatmulOrder): Batch = fastest for a
// prompt; PerToken = each row exactly as a one-row call computes it (batched decoding). The CUDA
// backend keeps this promise for up to 4 rows (cuda::kGemvMaxRows); larger batches go through
// cuBLAS, whose summation order depends on the shape.
enum class Order { Batch, PerToken };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual int n_threads() const = 0;
  // Whether Mat memory is host memory the caller may read and write directly.
  virtual bool host_visible() const = 0;

  // Called once by the engine with every weight matrix and every small vector (norms, biases, RoPE
  // frequency factors) of the model, before any op: a backend that keeps its own copies (a GPU)
  // makes them here and finds them later by the views' addresses. Host backends need nothing.
  virtual void prepare_weights(std::span<const WeightView> matrices, std::span<const VectorView> vectors) {}

  // --- memory ---------------------------------------------------------------------------------
  virtual Buffer alloc(size_t n_floats) = 0;
  virtual void upload(const float* host, Mat dst) = 0;         // dst <- host ([rows][cols], packed)
  virtual void download(const Mat& src, float* host) = 0;      // host ([rows][cols], packed) <- src
  virtual void copy(const Mat& src, Mat dst) = 0;              // same shape
  // An empty cache whose lists this backend's attention reads, storing K and V as `format` says
  // (a backend that cannot store a format throws tappa::Error naming it).
  virtual std::unique_ptr<KvCache> new_cache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format) = 0;
  std::unique_ptr<KvCache> new_cache(int n_layer, int n_head_kv, int head_dim) {
    return new_cache(n_layer, n_head_kv, head_dim, KvCacheFormat{});
  }

  // --- ops -------------------------------------------------------------------------------------
  // x[i] = row tokens[i] of the embedding table (dequantized) times scale.
  virtual void embed(const WeightView& table, std::span<const int32_t> tokens, float scale, Mat x) = 0;
  // out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w; out may be x.
  virtual void rms_norm(const Mat& x, const float* w, float eps, Mat out) = 0;
  // y = x · Wᵀ (y: [x.rows][w.rows]).
  virtual void matmul(const WeightView& w, const Mat& x, Mat y, Order order) = 0;
  virtual void add_bias(Mat y, const float* bias) = 0;   // y[i] += bias
  virtual void add(Mat y, const Mat& x) = 0;             // y += x (the residual stream)
  virtual void scale(Mat y, float s) = 0;                // y *= s
  // gate = act(gate) * up, act = silu or the tanh-approximated GeLU.
  virtual void glu(Mat gate, const Mat& up, FfnActivation act) = 0;
  virtual void softcap(Mat y, float cap) = 0;            // y = cap * tanh(y / cap)
  // (cos, sin) of every rotated channel for each position: table is [positions][n_rot].
  virtual void rope_table(const Rope& rope, std::span<const int64_t> positions, Mat table) = 0;
  // Rotates the first n_rot dims of each of the n_heads heads of every row of x (row i by table row i).
  virtual void rope(const Rope& rope, const Mat& table, Mat x, int n_heads) = 0;
  // Appends the rows of k and v (head h at cols [h*head_dim, (h+1)*head_dim)) to the layer's lists;
  // a cache of r lists per KV head (KvCache::repeat_lists: query-head granularity) gets each head's
  // rows in all r of its lists.
  virtual void kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v) = 0;
  // out (row r, query head h at cols [h*head_dim ...)) = softmax(q·Kᵀ·scale)·V per sequence.
  virtual void attention(const AttentionCall& call, const Mat& q, Mat out) = 0;

  // --- fused ops -------------------------------------------------------------------------------
  // Each default is the plain ops it stands for, in the order the forward pass called them before,
  // so a backend without a fused kernel (CPU, reference) computes exactly what it computed before.
  // A GPU fuses them to save launches and round trips of intermediates through memory.
  //
  // ys[i] = x · ws[i]ᵀ: several products of one input (Q, K and V), one pass over x.
  virtual void matmul_many(std::span<const WeightView* const> ws, const Mat& x, std::span<const Mat> ys, Order order) {
    for (size_t i = 0; i < ws.size(); ++i) matmul(*ws[i], x, ys[i], order);
  }
  // y += x · Wᵀ (the residual add after a projection); tmp ([x.rows][w.rows]) is scratch a fused
  // kernel leaves untouched.
  virtual void matmul_add(const WeightView& w, const Mat& x, Mat y, Mat tmp, Order order) {
    matmul(w, x, tmp, order);
    add(y, tmp);
  }
  // gate = act(x · Wgᵀ) * (x · Wuᵀ) (the gated feed-forward); up is scratch a fused kernel leaves
  // untouched.
  virtual void matmul_glu(const WeightView& wg, const WeightView& wu, const Mat& x, Mat gate, Mat up, FfnActivation act,
                          Order order) {
    matmul(wg, x, gate, order);
    matmul(wu, x, up, order);
    glu(gate, up, act);
  }
  // RoPE of the queries and the keys of the same rows (one launch on a GPU).
  virtual void rope_qk(const Rope& rope, const Mat& table, Mat q, int n_head, Mat k, int n_head_kv) {
    this->rope(rope, table, q, n_head);
    this->rope(rope, table, k, n_head_kv);
  }
  // ids[i] = index of the largest value of row i (the first one on ties), in host memory: greedy
  // decoding without copying whole logit rows to the host.
  virtual void argmax_rows(const Mat& logits, int32_t* ids);
  // Waits until all work queued so far is done (asynchronous backends; host backends return at once).
  virtual void synchronize() {}
};

// Backends by name: "cpu" (default), "reference", and "cuda" in a build with -DTAPPA_CUDA=ON. Throws
// tappa::Error naming the valid ones (and, for "cuda", why no GPU could be used).
std::unique_ptr<Backend> make_backend(const std::string& name, int n_threads);
// kv_append for host memory (the CPU and reference backends): KvCache::append per list.
void host_kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v);

std::vector<std::string> backend_names();

}  // namespace tappa::backend
