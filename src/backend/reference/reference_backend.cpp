// The reference backend: every op as the plain loop a textbook would write (llm.c's spirit), one
// thread, no SIMD, sums in double. It is the yardstick of tests/backend_parity_test.cpp, which
// checks every other backend against it op by op, and it runs whole models (EngineOptions::backend =
// "reference") for end-to-end comparisons.
//
// Where the fast backends follow llama.cpp's rounding on purpose (RoPE angles by repeated fp32
// multiplication and fused multiply-adds, RMSNorm's float squares summed in double, the activation
// quantization in front of quantized matrix products), this backend writes the same arithmetic out,
// because those are the definitions the model's numbers rest on. Everything else is exact math in
// double, rounded once: matrix products, softmax attention, SiLU, GeLU.
#include "backend/reference/reference_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kv/format_kv_cache.h"
#include "kv/host_kv_cache.h"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa::backend {
namespace {

void release(float* p) { delete[] p; }

bool is_float_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }
bool is_kquant(TensorType t) { return t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K; }

class ReferenceBackend final : public Backend {
 public:
  std::string name() const override { return "reference"; }
  int n_threads() const override { return 1; }
  bool host_visible() const override { return true; }

  Buffer alloc(size_t n) override { return n == 0 ? Buffer() : Buffer(new float[n](), n, release); }
  void upload(const float* host, Mat dst) override {
    for (int64_t i = 0; i < dst.rows; ++i)
      for (int64_t j = 0; j < dst.cols; ++j) dst.data[i * dst.ld + j] = host[i * dst.cols + j];
  }
  void download(const Mat& src, float* host) override {
    for (int64_t i = 0; i < src.rows; ++i)
      for (int64_t j = 0; j < src.cols; ++j) host[i * src.cols + j] = src.data[i * src.ld + j];
  }
  void copy(const Mat& src, Mat dst) override {
    for (int64_t i = 0; i < src.rows; ++i)
      for (int64_t j = 0; j < src.cols; ++j) dst.data[i * dst.ld + j] = src.data[i * src.ld + j];
  }
  using Backend::new_cache;
  std::unique_ptr<KvCache> new_cache(int n_layer, int n_head_kv, int head_dim, const KvCacheFormat& format) override {
    return make_host_kv_cache(n_layer, n_head_kv, head_dim, format);
  }

  void embed(const WeightView& table, std::span<const int32_t> tokens, float scale, Mat x) override {
    const size_t row = quant::row_bytes(table.type, x.cols);
    for (size_t i = 0; i < tokens.size(); ++i) {
      float* xi = x.data + static_cast<int64_t>(i) * x.ld;
      quant::dequantize_row(table.type, table.data + row * tokens[i], xi, x.cols);
      if (scale != 1.0f)
        for (int64_t j = 0; j < x.cols; ++j) xi[j] *= scale;
    }
  }

  void rms_norm(const Mat& x, const float* w, float eps, Mat out) override {
    for (int64_t i = 0; i < x.rows; ++i) {
      const float* xi = x.data + i * x.ld;
      float* oi = out.data + i * out.ld;
      double ss = 0.0;  // each square rounded to float, summed in double (ggml's definition)
      for (int64_t j = 0; j < x.cols; ++j) ss += static_cast<double>(xi[j] * xi[j]);
      const float s = 1.0f / std::sqrt(static_cast<float>(ss / x.cols) + eps);
      for (int64_t j = 0; j < x.cols; ++j) oi[j] = xi[j] * s * w[j];
    }
  }

  // y[i][r] = sum_c W[r][c] * a[i][c] in double, where a is the activation as the quantized kernels
  // see it: rounded to Q8_0 blocks (weights Q4_0 / Q4_1 / Q8_0) or Q8_K blocks (K-quants) and back.
  void matmul(const WeightView& w, const Mat& x, Mat y, Order) override {
    const size_t wrow = quant::row_bytes(w.type, w.cols);
    std::vector<float> wd(static_cast<size_t>(w.cols)), a(static_cast<size_t>(w.cols));
    std::vector<uint8_t> aq;
    const TensorType act = is_float_type(w.type) ? TensorType::F32 : is_kquant(w.type) ? TensorType::Q8_K : TensorType::Q8_0;
    std::vector<float> acts(static_cast<size_t>(x.rows * w.cols));
    for (int64_t i = 0; i < x.rows; ++i) {
      float* ai = acts.data() + i * w.cols;
      std::memcpy(ai, x.data + i * x.ld, sizeof(float) * w.cols);
      if (act != TensorType::F32) {
        aq.resize(quant::row_bytes(act, w.cols));
        quant::quantize_row(act, ai, aq.data(), w.cols);
        quant::dequantize_row(act, aq.data(), ai, w.cols);
      }
    }
    for (int64_t r = 0; r < w.rows; ++r) {
      quant::dequantize_row(w.type, w.data + wrow * r, wd.data(), w.cols);
      for (int64_t i = 0; i < x.rows; ++i) {
        const float* ai = acts.data() + i * w.cols;
        double s = 0.0;
        for (int64_t c = 0; c < w.cols; ++c) s += static_cast<double>(wd[c]) * ai[c];
        y.data[i * y.ld + r] = static_cast<float>(s);
      }
    }
  }

  void add_bias(Mat y, const float* bias) override {
    for (int64_t i = 0; i < y.rows; ++i)
      for (int64_t j = 0; j < y.cols; ++j) y.data[i * y.ld + j] += bias[j];
  }
  void add(Mat y, const Mat& x) override {
    for (int64_t i = 0; i < y.rows; ++i)
      for (int64_t j = 0; j < y.cols; ++j) y.data[i * y.ld + j] += x.data[i * x.ld + j];
  }
  void scale(Mat y, float s) override {
    for (int64_t i = 0; i < y.rows; ++i)
      for (int64_t j = 0; j < y.cols; ++j) y.data[i * y.ld + j] *= s;
  }

  void glu(Mat gate, const Mat& up, FfnActivation act) override {
    constexpr double kSqrt2OverPi = 0.79788456080286535587989211986876;
    for (int64_t i = 0; i < gate.rows; ++i) {
      for (int64_t j = 0; j < gate.cols; ++j) {
        const double g = gate.data[i * gate.ld + j], u = up.data[i * up.ld + j];
        const double a = act == FfnActivation::GeluTanh
                             ? 0.5 * g * (1.0 + std::tanh(kSqrt2OverPi * g * (1.0 + 0.044715 * g * g)))
                             : g / (1.0 + std::exp(-g));
        gate.data[i * gate.ld + j] = static_cast<float>(a * u);
      }
    }
  }

  void softcap(Mat y, float cap) override {
    const float inv = 1.0f / cap;
    for (int64_t i = 0; i < y.rows; ++i)
      for (int64_t j = 0; j < y.cols; ++j) y.data[i * y.ld + j] = std::tanh(y.data[i * y.ld + j] * inv) * cap;
  }

  // theta_i = pos * base^(-2i/n_rot) by repeated fp32 multiplication (llama.cpp), divided by the
  // optional frequency factor, times freq_scale; an explicit frequency table replaces all of it.
  void rope_table(const Rope& r, std::span<const int64_t> positions, Mat table) override {
    for (size_t p = 0; p < positions.size(); ++p) {
      float* cs = table.data + static_cast<int64_t>(p) * table.ld;
      const float theta_scale = std::pow(r.base, -2.0f / static_cast<float>(r.n_rot));
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
  }

  // (x_a, x_b) -> (x_a c - x_b s, x_a s + x_b c), each with one rounding of the product pair as a
  // fused multiply-add (llama.cpp's build contracts them so).
  void rope(const Rope& r, const Mat& table, Mat x, int n_heads) override {
    const int half = r.n_rot / 2;
    for (int64_t i = 0; i < x.rows; ++i) {
      const float* cs = table.data + i * table.ld;
      for (int h = 0; h < n_heads; ++h) {
        float* v = x.data + i * x.ld + static_cast<int64_t>(h) * r.head_dim;
        for (int m = 0; m < half; ++m) {
          const int a = r.neox ? m : 2 * m, b = r.neox ? m + half : 2 * m + 1;
          const float x0 = v[a], x1 = v[b], c = cs[2 * m], s = cs[2 * m + 1];
          v[a] = std::fma(x0, c, -(x1 * s));
          v[b] = std::fma(x0, s, x1 * c);
        }
      }
    }
  }

  void kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v) override { host_kv_append(cache, layer, k, v); }

  // Row i of a sequence (n_rows new rows at the end of each list of length len) sees list rows
  // [first, len - n_rows + i] with first = 0, or the newest `window` of them.
  void attention(const AttentionCall& c, const Mat& q, Mat out) override {
    const int group = c.n_head / c.n_head_kv, HD = c.head_dim;
    std::vector<double> p;
    std::vector<float> pf, kbuf, vbuf;
    for (const AttentionSeq& sq : c.seqs) {
      for (int i = 0; i < sq.n_rows; ++i) {
        for (int h = 0; h < c.n_head; ++h) {
          const int kv = h / group;
          const int n_vis = sq.cache->length(c.layer, kv) - sq.n_rows + i + 1;
          const int first = c.window > 0 ? std::max(0, n_vis - c.window) : 0;
          const float* qi = q.data + (sq.row0 + i) * q.ld + h * HD;
          const float* K = sq.cache->keys(c.layer, kv);
          const float* V = sq.cache->values(c.layer, kv);
          // Other storage formats: the stored values as fp32 (dequantized, rotation undone), so this
          // backend states what attention over such a cache means, whatever the kernels do inside.
          if (!K || !V) {
            kbuf.resize(static_cast<size_t>(n_vis) * HD);
            vbuf.resize(kbuf.size());
            sq.cache->read(c.layer, kv, 0, n_vis, kbuf.data(), vbuf.data());
            if (!K) K = kbuf.data();
            if (!V) V = vbuf.data();
          }
          p.assign(n_vis, 0.0);
          double mx = -INFINITY;
          for (int j = first; j < n_vis; ++j) {
            double s = 0.0;
            for (int d = 0; d < HD; ++d) s += static_cast<double>(qi[d]) * K[static_cast<int64_t>(j) * HD + d];
            p[j] = s * c.scale;
            mx = std::max(mx, p[j]);
          }
          double sum = 0.0;
          for (int j = first; j < n_vis; ++j) sum += (p[j] = std::exp(p[j] - mx));
          for (int j = first; j < n_vis; ++j) p[j] /= sum;
          float* oi = out.data + (sq.row0 + i) * out.ld + h * HD;
          for (int d = 0; d < HD; ++d) {
            double o = 0.0;
            for (int j = first; j < n_vis; ++j) o += p[j] * V[static_cast<int64_t>(j) * HD + d];
            oi[d] = static_cast<float>(o);
          }
          if (c.taps && c.taps->wants(sq.seq, h, i)) {
            pf.assign(p.begin(), p.end());
            c.taps->on_row(sq.seq, h, i, pf.data(), n_vis);
          }
        }
      }
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace tappa::backend
