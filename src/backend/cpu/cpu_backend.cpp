// The CPU backend (see cpu_backend.h). Every op is the backend/cpu kernel of the same name, split over
// the pool the way the single-sequence engine split it before the backend interface existed, so the
// results are bit-identical to that engine (and, through its kernels, to llama.cpp's CPU backend).
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kv_quant.h"
#include "backend/cpu/attention_kv_split.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/ops_gemma.h"
#include "backend/cpu/thread_pool.h"
#include "kv/format_kv_cache.h"
#include "kv/host_kv_cache.h"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa::backend {
TAPPA_ISA_BEGIN
namespace {

// Query heads per KV head the attention op handles at once (the engine checks the model against it).
constexpr int kMaxGroup = 64;

void release_aligned(float* p) { ::operator delete[](p, std::align_val_t{64}); }

cpu::RopeParams rope_params(const Rope& r) {
  return cpu::RopeParams{r.n_rot, r.head_dim, r.base, r.freq_scale, r.freq_factors, r.neox, r.inv_freq};
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : pool_(n_threads > 0 ? n_threads : cpu::default_thread_count()) {
    scores_.resize(pool_.size());
  }

  std::string name() const override { return "cpu"; }
  int n_threads() const override { return pool_.size(); }
  bool host_visible() const override { return true; }

  Buffer alloc(size_t n) override {
    if (n == 0) return {};
    auto* p = static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t{64}));
    std::memset(p, 0, n * sizeof(float));
    return Buffer(p, n, release_aligned);
  }
  void upload(const float* host, Mat dst) override {
    for (int64_t i = 0; i < dst.rows; ++i) std::memcpy(dst.data + i * dst.ld, host + i * dst.cols, sizeof(float) * dst.cols);
  }
  void download(const Mat& src, float* host) override {
    for (int64_t i = 0; i < src.rows; ++i) std::memcpy(host + i * src.cols, src.data + i * src.ld, sizeof(float) * src.cols);
  }
  void copy(const Mat& src, Mat dst) override {
    for (int64_t i = 0; i < src.rows; ++i) std::memcpy(dst.data + i * dst.ld, src.data + i * src.ld, sizeof(float) * src.cols);
  }
  using Backend::new_cache;
  std::unique_ptr<KvCache> new_cache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format) override {
    return make_host_kv_cache(n_layer, n_head_kv, head_dim, format);
  }

  void embed(const WeightView& table, std::span<const int32_t> tokens, float scale, Mat x) override {
    const size_t row = quant::row_bytes(table.type, x.cols);
    pool_.parallel_for(static_cast<int64_t>(tokens.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) quant::dequantize_row(table.type, table.data + row * tokens[i], x.data + i * x.ld, x.cols);
      if (scale != 1.0f)
        for (int64_t i = b; i < e; ++i) cpu::scale_inplace(x.data + i * x.ld, x.cols, scale);
    });
  }

  void rms_norm(const Mat& x, const float* w, float eps, Mat out) override {
    pool_.parallel_for(x.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) cpu::rms_norm_row(x.data + i * x.ld, w, out.data + i * out.ld, x.cols, eps);
    });
  }

  void matmul(const WeightView& w, const Mat& x, Mat y, Order order) override {
    const bool per_token = order == Order::PerToken;
    cpu::matmul(w, x.data, x.rows, x.ld, y.data, y.ld, pool_, scratch_,
                per_token ? cpu::MatmulOrder::PerToken : cpu::MatmulOrder::Batch,
                per_token && x.rows >= cpu::prepack_min_tokens() ? panels_for(w) : nullptr);
  }

  void add_bias(Mat y, const float* bias) override {
    pool_.parallel_for(y.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float* yi = y.data + i * y.ld;
        for (int64_t j = 0; j < y.cols; ++j) yi[j] += bias[j];
      }
    });
  }

  void add(Mat y, const Mat& x) override {
    if (y.ld == y.cols && x.ld == x.cols) {  // contiguous: one flat loop split in 1024-float grains
      pool_.parallel_for(y.rows * y.cols, 1024, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) y.data[j] += x.data[j];
      });
      return;
    }
    pool_.parallel_for(y.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        for (int64_t j = 0; j < y.cols; ++j) y.data[i * y.ld + j] += x.data[i * x.ld + j];
    });
  }

  void scale(Mat y, float s) override {
    pool_.parallel_for(y.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) cpu::scale_inplace(y.data + i * y.ld, y.cols, s);
    });
  }

  void glu(Mat gate, const Mat& up, FfnActivation act) override {
    const auto run = [&](float* g, const float* u, int64_t n) {
      if (act == FfnActivation::GeluTanh) {
        cpu::geglu_tanh(g, u, g, n);
      } else {
        cpu::silu_mul(g, u, g, n);
      }
    };
    if (gate.ld == gate.cols && up.ld == up.cols) {
      pool_.parallel_for(gate.rows * gate.cols, 1024, [&](int64_t b, int64_t e) { run(gate.data + b, up.data + b, e - b); });
      return;
    }
    pool_.parallel_for(gate.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) run(gate.data + i * gate.ld, up.data + i * up.ld, gate.cols);
    });
  }

  void softcap(Mat y, float cap) override {
    if (y.ld == y.cols) {
      pool_.parallel_for(y.rows * y.cols, 4096, [&](int64_t b, int64_t e) { cpu::softcap_inplace(y.data + b, e - b, cap); });
      return;
    }
    pool_.parallel_for(y.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) cpu::softcap_inplace(y.data + i * y.ld, y.cols, cap);
    });
  }

  void rope_table(const Rope& rope, std::span<const int64_t> positions, Mat table) override {
    const cpu::RopeParams p = rope_params(rope);
    for (size_t i = 0; i < positions.size(); ++i) cpu::rope_angles(p, positions[i], table.data + i * table.ld);
  }

  void rope(const Rope& rope, const Mat& table, Mat x, int n_heads) override {
    const cpu::RopeParams p = rope_params(rope);
    pool_.parallel_for(x.rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) cpu::rope_apply(p, table.data + i * table.ld, x.data + i * x.ld, n_heads);
    });
  }

  void kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v) override { host_kv_append(cache, layer, k, v); }

  void attention(const AttentionCall& c, const Mat& q, Mat out) override;

 private:
  // The GEMM panels of a matrix that batched decoding runs through the GEMM (cpu::prepack), made the
  // first time such a step reaches it and kept while the backend lives; nullptr (also remembered)
  // for matrices that have none, or once the kept panels would pass TAPPA_CPU_PREPACK_MIB (default
  // 1024; 0 turns keeping off): the panel form of Q4_1 is twice its bytes (the default model: +158 MiB
  // of RSS at 16 sequences), so a large Q4_1 model keeps what fits and repacks the rest every step.
  const uint8_t* panels_for(const WeightView& w) {
    static const size_t cap = [] {
      const char* v = std::getenv("TAPPA_CPU_PREPACK_MIB");
      return (v && *v ? std::strtoull(v, nullptr, 10) : 1024ull) << 20;
    }();
    if (cap == 0) return nullptr;
    const PanelKey key{w.data, w.rows, w.cols, w.type};
    auto it = panels_.find(w.data);
    if (it != panels_.end() && it->second.key == key) return it->second.data.get();
    const size_t n = cpu::prepack_bytes(w);
    Panels p{key, {}};
    if (n > 0 && kept_bytes_ + n <= cap) {
      p.data.reset(static_cast<uint8_t*>(::operator new[](n, std::align_val_t{64})));
      cpu::prepack(w, p.data.get(), pool_);
      kept_bytes_ += n;
    }
    Panels& slot = panels_[w.data];  // a view of the same address with another shape replaces the entry
    if (slot.data) kept_bytes_ -= cpu::prepack_bytes(WeightView{slot.key.type, slot.key.data, slot.key.rows, slot.key.cols});
    slot = std::move(p);
    return slot.data.get();
  }
  struct PanelKey {
    const uint8_t* data;
    int64_t rows, cols;
    TensorType type;
    bool operator==(const PanelKey&) const = default;
  };
  struct AlignedDelete {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  struct Panels {
    PanelKey key;
    std::unique_ptr<uint8_t[], AlignedDelete> data;
  };

  cpu::ThreadPool pool_;
  cpu::Scratch scratch_;
  std::unordered_map<const uint8_t*, Panels> panels_;  // by weight address: matrices batched steps used
  size_t kept_bytes_ = 0;                              // of the panels kept in panels_
  std::vector<std::vector<float>> scores_;  // per thread: [group][longest list]
  std::vector<int64_t> prefix_;             // attention: first task of each sequence
  std::vector<const FormatKvCache*> formatted_;  // attention: each sequence's cache if not fp32
  cpu::KvSplitAttention kv_split_;                // attention: long decode rows of those, split over threads
};

// Each (token, KV head) pair attends to its list's rows up to and including itself, with the whole
// group of query heads that share the KV head: each cached key and value row is then read once per
// group instead of once per query head (GQA), which is what long-context decoding is bound by.
// Costs grow with the list length, so threads take small chunks of tasks from a shared counter
// instead of fixed halves (a fixed split leaves the thread with the short rows idle).
void CpuBackend::attention(const AttentionCall& c, const Mat& q, Mat out) {
  const int group = c.n_head / c.n_head_kv, HD = c.head_dim;
  if (group > kMaxGroup)
    throw Error("unsupported attention: " + std::to_string(group) + " query heads per KV head (at most " +
                std::to_string(kMaxGroup) + ")");
  // Tasks: sequence-major, then row, then KV head. prefix[s] = first task of sequence s.
  int64_t tasks = 0;
  int longest = 0;
  std::vector<int64_t>& prefix = prefix_;  // a member: the workers read it (no allocation once grown)
  prefix.resize(c.seqs.size() + 1);
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    prefix[s] = tasks;
    tasks += static_cast<int64_t>(c.seqs[s].n_rows) * c.n_head_kv;
    for (int h = 0; h < c.n_head_kv; ++h) longest = std::max(longest, c.seqs[s].cache->length(c.layer, h));
  }
  prefix[c.seqs.size()] = tasks;
  // Caches in another format than fp32 go through attention_kv_quant.cpp; fp32 ones keep the
  // llama.cpp-order kernel below.
  std::vector<const FormatKvCache*>& formatted = formatted_;
  formatted.assign(c.seqs.size(), nullptr);
  for (size_t s = 0; s < c.seqs.size(); ++s) formatted[s] = dynamic_cast<const FormatKvCache*>(c.seqs[s].cache);
  const bool split = kv_split_.plan(c, formatted);  // long single-token rows of those: over all threads, below
  const size_t need = static_cast<size_t>(group) * longest;
  for (auto& s : scores_)
    if (s.size() < need) s.resize(std::max(need, s.size() + s.size() / 2));

  std::atomic<int64_t> next_task{0};
  const int64_t grab = std::max<int64_t>(1, tasks / (16 * pool_.size()));
  auto attend = [&](int t) {
    float* scores = scores_[t].data();
    const size_t stride = static_cast<size_t>(longest);
    cpu::AttentionRow rows[kMaxGroup];
    float* probs[kMaxGroup];
    float* outs[kMaxGroup];
    size_t s = 0;
    for (;;) {
      const int64_t begin = next_task.fetch_add(grab, std::memory_order_relaxed);
      if (begin >= tasks) break;
      const int64_t end = std::min(tasks, begin + grab);
      for (int64_t task = begin; task < end; ++task) {
        if (task < prefix[s]) s = 0;
        while (task >= prefix[s + 1]) ++s;
        const AttentionSeq& sq = c.seqs[s];
        const int64_t local = task - prefix[s];
        const int i = static_cast<int>(local / c.n_head_kv), kvh = static_cast<int>(local % c.n_head_kv);
        const int len = sq.cache->length(c.layer, kvh);
        const int n_vis = len - sq.n_rows + i + 1;
        const int64_t r = sq.row0 + i;
        if (split && formatted[s] && cpu::kv_row_splits(sq.n_rows, c.window > 0 ? std::max(0, n_vis - c.window) : 0, n_vis))
          continue;
        for (int g = 0; g < group; ++g) {
          const int h = kvh * group + g;
          cpu::AttentionRow& row = rows[g];
          row.q = q.data + r * q.ld + h * HD;
          row.K = sq.cache->keys(c.layer, kvh);
          row.V = sq.cache->values(c.layer, kvh);
          // A local layer sees the last `window` rows of its list (the keys p - window + 1 .. p when
          // nothing was evicted; with a compressed cache, the newest `window` rows kept).
          row.first = c.window > 0 ? std::max(0, n_vis - c.window) : 0;
          row.n_vis = n_vis;
          row.head_dim = HD;
          row.scale = c.scale;
          row.single_token = sq.n_rows == 1;  // llama.cpp: a one-token ubatch takes the vec_dot path
          probs[g] = scores + g * stride;
          outs[g] = out.data + r * out.ld + h * HD;
        }
        if (const FormatKvCache* fc = formatted[s]) {
          const KvCacheFormat f = fc->format();
          const cpu::KvList list{fc->k_data(c.layer, kvh), fc->v_data(c.layer, kvh), fc->k_row_bytes(), fc->v_row_bytes(),
                                 f.k, f.v, fc->k_rot_block(), fc->v_rot_block()};
          const float* qs[kMaxGroup];
          float scales[kMaxGroup];
          for (int g = 0; g < group; ++g) qs[g] = rows[g].q, scales[g] = rows[g].scale;
          cpu::attention_rows_kv(list, rows[0].first, n_vis, HD, qs, scales, group, probs, outs);
        } else {
          cpu::attention_rows(rows, group, probs, outs);
        }
        if (c.taps) {
          for (int g = 0; g < group; ++g) {
            const int h = kvh * group + g;
            if (c.taps->wants(sq.seq, h, i)) c.taps->on_row(sq.seq, h, i, probs[g], n_vis);
          }
        }
      }
    }
  };
  pool_.run_each(attend);
  if (split) kv_split_.run(pool_, c, q, out);
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) { return std::make_unique<CpuBackend>(n_threads); }

TAPPA_ISA_END
}  // namespace tappa::backend
