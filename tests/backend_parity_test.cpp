// Every op of every backend against the reference backend (the role of llama.cpp's test-backend-ops),
// on random inputs of awkward shapes: odd row counts, strided matrices, several weight formats, GQA
// groups of 1, 3, 4 and 7, sliding windows, and ragged caches (every (layer, KV head) list of its own
// length, several sequences in one call, one-row and many-row sequences).
//
// What each op claims against the reference (a backend that runs on another device, such as a GPU
// in bf16, states its own bounds where it registers below):
//   bit for bit  embed, rms_norm, add_bias, add, scale, softcap, rope_table, rope, kv_append, copy:
//                the CPU backend computes these with the same arithmetic the reference writes out.
//   bounded      matmul: the reference sums exactly (double) what the kernels sum in fp32 after the
//                same activation quantization; per output |Δ| <= 1e-5 · max|W_row| · Σ|a_k| (fewer than
//                cols/32 + 16 fp32 roundings of 2^-24 each, as tests/matmul_test.cpp derives), float
//                weights (cols + 16) · 2^-24 · Σ|W_k a_k|.
//                glu: silu with ggml's exp (<= 1.5 ulp) and one division and product: 2^-20 relative;
//                GeLU through ggml's fp16 table: x rounded to fp16 (2^-11 relative) and the value
//                stored in fp16: |Δ| <= (1.2|x| + |gelu(x)|) · 2^-11 · |up| + 1e-7.
//                attention: q·k in fp32 (|Δs| <= scale·(d+2)·2^-24·Σ|q_i k_i|), ggml's exp (~1.5 ulp),
//                p·V in fp32 over n keys: |Δout| <= max|V| · (2·max|Δs| + (n + 8)·2^-24) + 1e-7; the
//                probabilities handed to taps likewise.
//                attention over f16 / bf16 / q8_0 / q4_0 caches (attention_kv_quant.cpp): both backends
//                see the same stored values (the reference reads them back as fp32), so the format's
//                own rounding cancels and only the fp32 arithmetic is bounded. Without rotation as
//                above; with a Hadamard block b the query and the output are rotated in fp32 (and the
//                reference un-rotates K and V in fp32), each rotated value off by at most
//                (log2 b + 1)·2^-24·‖x‖₂, so |Δs| <= scale·2^-24·(d + 2 + 4(log2 b + 1))·‖q‖₂·max‖k‖₂ and
//                the output gains 2·(log2 64 + 1)·2^-24·max‖v‖₂.
// A one-ulp change in any bit-for-bit op must be caught: a backend that forwards to the CPU backend
// but nudges one output element by one ulp is run through the same checks and must fail each of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <map>
#include <mutex>
#include <random>
#include <tuple>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "kv/host_kv_cache.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace tappa {
namespace {

using backend::AttentionCall;
using backend::AttentionSeq;
using backend::Backend;
using backend::Buffer;
using backend::Mat;

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// A host matrix copied into a backend's memory, with a row stride ld >= cols.
struct DevMat {
  Buffer buf;
  Mat m;
  DevMat(Backend& be, const std::vector<float>& host, int64_t rows, int64_t cols, int64_t ld = 0) {
    ld = ld > 0 ? ld : cols;
    buf = be.alloc(static_cast<size_t>(rows * ld + 1));
    m = Mat{buf.data(), rows, cols, ld};
    std::vector<float> packed(static_cast<size_t>(rows * cols));
    for (int64_t i = 0; i < rows * cols; ++i) packed[i] = host[i];
    be.upload(packed.data(), m);
  }
  std::vector<float> get(Backend& be) const {
    std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
    be.download(m, out.data());
    return out;
  }
};

// The result of one check: ok, or the first offending element.
struct Verdict {
  bool ok = true;
  std::string what;
};

Verdict exact(const std::vector<float>& a, const std::vector<float>& b, const std::string& op) {
  if (a.size() != b.size()) return {false, op + ": sizes differ"};
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0)
      return {false, op + ": element " + std::to_string(i) + " is " + std::to_string(a[i]) + ", reference " +
                         std::to_string(b[i]) + " (bit for bit claimed)"};
  return {};
}

Verdict bounded(const std::vector<float>& a, const std::vector<float>& b, const std::vector<double>& tol,
                const std::string& op) {
  if (a.size() != b.size()) return {false, op + ": sizes differ"};
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= tol[i])) return {false, op + ": element " + std::to_string(i) + " differs by " + std::to_string(d) +
                                           " > bound " + std::to_string(tol[i])};
  }
  return {};
}

// --- the checks, one per op (each runs the op on `be` and on the reference and compares) -----------

Verdict check_embed(Backend& be, Backend& ref, TensorType t, int64_t cols) {
  const int64_t vocab = 37;
  const std::vector<float> table = randn(static_cast<size_t>(vocab * cols), 3);
  std::vector<uint8_t> q(quant::row_bytes(t, cols) * vocab);
  for (int64_t r = 0; r < vocab; ++r)
    quant::quantize_row(t, table.data() + r * cols, q.data() + quant::row_bytes(t, cols) * r, cols);
  const WeightView w{t, q.data(), vocab, cols};
  const std::vector<int32_t> toks = {5, 0, 36, 5, 17, 2, 9};
  DevMat x(be, std::vector<float>(toks.size() * cols), static_cast<int64_t>(toks.size()), cols, cols + 3);
  DevMat y(ref, std::vector<float>(toks.size() * cols), static_cast<int64_t>(toks.size()), cols);
  be.embed(w, toks, 1.7f, x.m);
  ref.embed(w, toks, 1.7f, y.m);
  return exact(x.get(be), y.get(ref), "embed " + std::string(tensor_type_info(t).name));
}

Verdict check_rms_norm(Backend& be, Backend& ref, int64_t rows, int64_t cols) {
  const auto x = randn(static_cast<size_t>(rows * cols), 5, 3.0f), w = randn(static_cast<size_t>(cols), 6);
  DevMat a(be, x, rows, cols, cols + 5), b(ref, x, rows, cols);
  be.rms_norm(a.m, w.data(), 1e-6f, a.m);  // in place, strided
  ref.rms_norm(b.m, w.data(), 1e-6f, b.m);
  return exact(a.get(be), b.get(ref), "rms_norm");
}

Verdict check_elementwise(Backend& be, Backend& ref, int64_t rows, int64_t cols) {
  const auto x = randn(static_cast<size_t>(rows * cols), 7), y = randn(static_cast<size_t>(rows * cols), 8),
             bias = randn(static_cast<size_t>(cols), 9);
  for (int op = 0; op < 4; ++op) {
    for (int64_t ld : {cols, cols + 7}) {  // contiguous and strided take different paths on the CPU
      DevMat a(be, x, rows, cols, ld), b(ref, x, rows, cols);
      DevMat ay(be, y, rows, cols, ld), by(ref, y, rows, cols);
      const char* name = op == 0 ? "add_bias" : op == 1 ? "add" : op == 2 ? "scale" : "softcap";
      if (op == 0) {
        be.add_bias(a.m, bias.data());
        ref.add_bias(b.m, bias.data());
      } else if (op == 1) {
        be.add(a.m, ay.m);
        ref.add(b.m, by.m);
      } else if (op == 2) {
        be.scale(a.m, 0.37f);
        ref.scale(b.m, 0.37f);
      } else {
        be.softcap(a.m, 3.0f);
        ref.softcap(b.m, 3.0f);
      }
      const Verdict v = exact(a.get(be), b.get(ref), name);
      if (!v.ok) return v;
    }
  }
  return {};
}

Verdict check_copy(Backend& be, Backend& ref, int64_t rows, int64_t cols) {
  const auto x = randn(static_cast<size_t>(rows * cols), 10);
  DevMat a(be, x, rows, cols, cols + 2), b(be, std::vector<float>(rows * cols), rows, cols, cols + 9);
  be.copy(a.m, b.m);
  return exact(b.get(be), x, "copy");
}

Verdict check_glu(Backend& be, Backend& ref, FfnActivation act, int64_t rows, int64_t cols) {
  const auto g = randn(static_cast<size_t>(rows * cols), 11, 4.0f), u = randn(static_cast<size_t>(rows * cols), 12);
  DevMat a(be, g, rows, cols), au(be, u, rows, cols), b(ref, g, rows, cols), bu(ref, u, rows, cols);
  be.glu(a.m, au.m, act);
  ref.glu(b.m, bu.m, act);
  const auto rb = b.get(ref);
  std::vector<double> tol(rb.size());
  for (size_t i = 0; i < rb.size(); ++i)
    tol[i] = act == FfnActivation::Silu ? std::ldexp(std::fabs(rb[i]), -20) + 1e-30
                                        : (1.2 * std::fabs(g[i]) + std::fabs(rb[i] / (u[i] == 0 ? 1 : u[i]))) *
                                                  std::ldexp(1.0, -11) * std::fabs(u[i]) + 1e-7;
  return bounded(a.get(be), rb, tol, act == FfnActivation::Silu ? "glu silu" : "glu gelu");
}

Verdict check_rope(Backend& be, Backend& ref, bool neox, int n_rot, int head_dim, int n_heads, bool factors) {
  const std::vector<int64_t> pos = {0, 1, 7, 300, 4095, 8191, 31000};
  const int64_t n = static_cast<int64_t>(pos.size());
  std::vector<float> ff(n_rot / 2);
  for (int i = 0; i < n_rot / 2; ++i) ff[i] = 1.0f + 0.25f * (i % 5);
  const backend::Rope r{n_rot, head_dim, 500000.0f, 0.5f, factors ? ff.data() : nullptr, neox, nullptr};
  DevMat ta(be, std::vector<float>(n * n_rot), n, n_rot), tb(ref, std::vector<float>(n * n_rot), n, n_rot);
  be.rope_table(r, pos, ta.m);
  ref.rope_table(r, pos, tb.m);
  Verdict v = exact(ta.get(be), tb.get(ref), "rope_table");
  if (!v.ok) return v;
  const auto x = randn(static_cast<size_t>(n * n_heads * head_dim), 13);
  DevMat a(be, x, n, n_heads * head_dim, n_heads * head_dim + 3), b(ref, x, n, n_heads * head_dim);
  be.rope(r, ta.m, a.m, n_heads);
  ref.rope(r, tb.m, b.m, n_heads);
  return exact(a.get(be), b.get(ref), neox ? "rope neox" : "rope norm");
}

Verdict check_matmul(Backend& be, Backend& ref, TensorType t, int64_t rows, int64_t cols, int64_t m, backend::Order order) {
  const auto wf = randn(static_cast<size_t>(rows * cols), 14, 0.05f);
  const size_t rb = quant::row_bytes(t, cols);
  std::vector<uint8_t> wq(rb * rows);
  std::vector<float> wd(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    quant::quantize_row(t, wf.data() + r * cols, wq.data() + rb * r, cols);
    quant::dequantize_row(t, wq.data() + rb * r, wd.data() + r * cols, cols);
  }
  const WeightView w{t, wq.data(), rows, cols};
  const auto x = randn(static_cast<size_t>(m * cols), 15, 2.0f);
  DevMat xa(be, x, m, cols, cols + 4), xb(ref, x, m, cols);
  DevMat ya(be, std::vector<float>(m * rows), m, rows, rows + 1), yb(ref, std::vector<float>(m * rows), m, rows);
  be.matmul(w, xa.m, ya.m, order);
  ref.matmul(w, xb.m, yb.m, order);
  const bool quantized = t != TensorType::F32 && t != TensorType::F16 && t != TensorType::BF16;
  const TensorType act = t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K ? TensorType::Q8_K : TensorType::Q8_0;
  std::vector<float> xq(static_cast<size_t>(cols));
  std::vector<uint8_t> aq(quantized ? quant::row_bytes(act, cols) : 0);
  std::vector<double> tol(static_cast<size_t>(m * rows));
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(xq.data(), x.data() + i * cols, sizeof(float) * cols);
    if (quantized) {
      quant::quantize_row(act, xq.data(), aq.data(), cols);
      quant::dequantize_row(act, aq.data(), xq.data(), cols);
    }
    for (int64_t r = 0; r < rows; ++r) {
      double wmax = 0, asum = 0, prod = 0;
      for (int64_t c = 0; c < cols; ++c) {
        wmax = std::max(wmax, std::fabs(static_cast<double>(wd[r * cols + c])));
        asum += std::fabs(xq[c]);
        prod += std::fabs(static_cast<double>(wd[r * cols + c]) * xq[c]);
      }
      tol[i * rows + r] = quantized ? 1e-5 * wmax * asum + 1e-9 : (cols + 16) * std::ldexp(1.0, -24) * prod + 1e-9;
      if (t == TensorType::Q4_1) {
        // Q4_1's min term takes the block's activation sum as ggml's Q8_1 stores it, in fp16:
        // |m_b| · |Σ_b a| · 2^-11 more per block.
        const auto* blocks = reinterpret_cast<const quant::BlockQ4_1*>(wq.data() + rb * r);
        for (int64_t b = 0; b < cols / 32; ++b) {
          double bs = 0;
          for (int k = 0; k < 32; ++k) bs += xq[32 * b + k];
          tol[i * rows + r] += std::fabs(quant::half_to_float(blocks[b].m)) * std::fabs(bs) * std::ldexp(1.0, -11);
        }
      }
    }
  }
  return bounded(ya.get(be), yb.get(ref), tol,
                 "matmul " + std::string(tensor_type_info(t).name) + " m=" + std::to_string(m));
}

// Ragged caches: n_seq sequences, each with its own lengths per (layer, KV head), n_rows new rows
// per sequence (1 for decodes), layer `layer` of n_layer.
struct AttnCase {
  int n_head, n_head_kv, head_dim;
  std::vector<int> new_rows;  // per sequence
  int window;
  KvCacheFormat format = {};
  int extra_rows = 0;  // added to every list's earlier rows (long lists: split decode attention)
};

class RecordingTaps : public backend::AttentionTaps {
 public:
  bool wants(int seq, int head, int row) override { return (seq + head + row) % 3 == 0; }
  void on_row(int seq, int head, int row, const float* probs, int n) override {
    std::lock_guard<std::mutex> lock(mu);
    rows[{seq, head, row}] = std::vector<float>(probs, probs + n);
  }
  std::mutex mu;
  std::map<std::tuple<int, int, int>, std::vector<float>> rows;
};

Verdict check_attention(Backend& be, Backend& ref, const AttnCase& c, uint32_t seed) {
  const int n_layer = 3, layer = 1, HD = c.head_dim, KD = c.n_head_kv * HD, QD = c.n_head * HD;
  const int n_seq = static_cast<int>(c.new_rows.size());
  std::vector<std::unique_ptr<KvCache>> ca, cb;
  int total = 0;
  for (int s = 0; s < n_seq; ++s) {
    ca.push_back(be.new_cache(n_layer, c.n_head_kv, HD, c.format));
    cb.push_back(ref.new_cache(n_layer, c.n_head_kv, HD, c.format));
    // Earlier rows: a different length per KV head (a compressed cache), then this call's rows.
    for (int h = 0; h < c.n_head_kv; ++h) {
      const int len = 3 + (s * 37 + h * 11 + static_cast<int>(seed)) % 90 + c.extra_rows;
      const auto k = randn(static_cast<size_t>(len * HD), seed + 100 * s + h), v = randn(static_cast<size_t>(len * HD), seed + 7 + 100 * s + h);
      for (auto* cache : {ca.back().get(), cb.back().get()}) {
        cache->reserve_extra(layer, len + c.new_rows[s]);
        cache->append(layer, h, k.data(), v.data(), len, HD);
      }
    }
    total += c.new_rows[s];
  }
  // This call's rows: K/V appended through the op under test, then attention.
  const auto q = randn(static_cast<size_t>(total * QD), seed + 1), k = randn(static_cast<size_t>(total * KD), seed + 2),
             v = randn(static_cast<size_t>(total * KD), seed + 3, 2.0f);
  DevMat qa(be, q, total, QD), qb(ref, q, total, QD);
  DevMat ka(be, k, total, KD), kb(ref, k, total, KD), va(be, v, total, KD), vb(ref, v, total, KD);
  std::vector<AttentionSeq> sa, sb;
  int row = 0;
  for (int s = 0; s < n_seq; ++s) {
    be.kv_append(*ca[s], layer, ka.m.row_range(row, c.new_rows[s]), va.m.row_range(row, c.new_rows[s]));
    ref.kv_append(*cb[s], layer, kb.m.row_range(row, c.new_rows[s]), vb.m.row_range(row, c.new_rows[s]));
    sa.push_back({ca[s].get(), row, c.new_rows[s], s});
    sb.push_back({cb[s].get(), row, c.new_rows[s], s});
    row += c.new_rows[s];
  }
  // kv_append, bit for bit: every list's rows.
  for (int s = 0; s < n_seq; ++s)
    for (int h = 0; h < c.n_head_kv; ++h) {
      const int n = ca[s]->length(layer, h);
      if (n != cb[s]->length(layer, h)) return {false, "kv_append: list lengths differ"};
      std::vector<float> k1(static_cast<size_t>(n * HD)), k2(k1.size()), v1(k1.size()), v2(k1.size());
      ca[s]->read(layer, h, 0, n, k1.data(), v1.data());
      cb[s]->read(layer, h, 0, n, k2.data(), v2.data());
      Verdict vk = exact(k1, k2, "kv_append keys");
      if (!vk.ok) return vk;
      Verdict vv = exact(v1, v2, "kv_append values");
      if (!vv.ok) return vv;
    }
  RecordingTaps ta, tb;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  DevMat oa(be, std::vector<float>(total * QD), total, QD), ob(ref, std::vector<float>(total * QD), total, QD);
  be.attention(AttentionCall{layer, c.n_head, c.n_head_kv, HD, scale, c.window, sa, &ta}, qa.m, oa.m);
  ref.attention(AttentionCall{layer, c.n_head, c.n_head_kv, HD, scale, c.window, sb, &tb}, qb.m, ob.m);
  // The bound, from the inputs: scores error from Σ|q k|, the largest |V| and the visible key count.
  const auto out_b = ob.get(ref);
  std::vector<double> tol(out_b.size());
  row = 0;
  const int group = c.n_head / c.n_head_kv;
  double max_ds_all = 0;
  for (int s = 0; s < n_seq; ++s) {
    for (int i = 0; i < c.new_rows[s]; ++i, ++row) {
      for (int h = 0; h < c.n_head; ++h) {
        const int kv = h / group, n = cb[s]->length(layer, kv);
        std::vector<float> K(static_cast<size_t>(n * HD)), V(K.size());
        cb[s]->read(layer, kv, 0, n, K.data(), V.data());
        double qk = 0, vmax = 0, qn = 0, kn = 0, vn = 0;
        const float* qr = q.data() + static_cast<size_t>(row) * QD + h * HD;
        for (int d = 0; d < HD; ++d) qn += static_cast<double>(qr[d]) * qr[d];
        for (int j = 0; j < n; ++j) {
          double sj = 0, kj = 0, vj = 0;
          for (int d = 0; d < HD; ++d) {
            sj += std::fabs(static_cast<double>(qr[d]) * K[j * HD + d]);
            kj += static_cast<double>(K[j * HD + d]) * K[j * HD + d];
            vj += static_cast<double>(V[j * HD + d]) * V[j * HD + d];
          }
          qk = std::max(qk, sj);
          kn = std::max(kn, kj);
          vn = std::max(vn, vj);
        }
        for (float x : V) vmax = std::max(vmax, std::fabs(static_cast<double>(x)));
        const double u = std::ldexp(1.0, -24);
        const int rot_k = c.format.rotate_k ? static_cast<int>(std::log2(HD & -HD)) + 1 : 0;
        double ds = scale * (HD + 2) * u * qk;
        if (rot_k) ds = scale * u * (HD + 2 + 4 * rot_k) * std::sqrt(qn * kn);
        const double dv = c.format.rotate_v ? 2 * (6 + 1) * u * std::sqrt(vn) : 0.0;
        max_ds_all = std::max(max_ds_all, ds);
        for (int d = 0; d < HD; ++d)
          tol[static_cast<size_t>(row) * QD + h * HD + d] = vmax * (2 * ds + (n + 8) * u) + dv + 1e-7;
      }
    }
  }
  const Verdict vo = bounded(oa.get(be), out_b, tol, "attention");
  if (!vo.ok) return vo;
  if (ta.rows.size() != tb.rows.size()) return {false, "attention taps: different rows delivered"};
  for (const auto& [key, pb] : tb.rows) {
    const auto it = ta.rows.find(key);
    if (it == ta.rows.end() || it->second.size() != pb.size()) return {false, "attention taps: a row is missing or short"};
    std::vector<double> ptol(pb.size());
    for (size_t j = 0; j < pb.size(); ++j) ptol[j] = pb[j] * (2 * max_ds_all + 8 * std::ldexp(1.0, -24)) + 1e-9;
    Verdict vp = bounded(it->second, pb, ptol, "attention taps");
    if (!vp.ok) return vp;
  }
  return {};
}

// --- every check, for one backend ---------------------------------------------------------------------

struct Check {
  std::string name;
  bool exact;  // claimed bit for bit (must catch a one-ulp nudge)
  std::function<Verdict(Backend&, Backend&)> run;
};

std::vector<Check> all_checks() {
  std::vector<Check> v;
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::Q8_0, TensorType::Q4_1, TensorType::Q4_K, TensorType::Q6_K})
    v.push_back({"embed", true, [t](Backend& b, Backend& r) { return check_embed(b, r, t, 256); }});
  v.push_back({"rms_norm", true, [](Backend& b, Backend& r) { return check_rms_norm(b, r, 7, 576); }});
  v.push_back({"rms_norm(head)", true, [](Backend& b, Backend& r) { return check_rms_norm(b, r, 33, 64); }});
  v.push_back({"elementwise", true, [](Backend& b, Backend& r) { return check_elementwise(b, r, 5, 1100); }});
  v.push_back({"copy", true, [](Backend& b, Backend& r) { return check_copy(b, r, 6, 77); }});
  v.push_back({"rope", true, [](Backend& b, Backend& r) { return check_rope(b, r, false, 64, 64, 9, false); }});
  v.push_back({"rope(neox,factors)", true, [](Backend& b, Backend& r) { return check_rope(b, r, true, 64, 64, 3, true); }});
  v.push_back({"rope(partial)", true, [](Backend& b, Backend& r) { return check_rope(b, r, true, 32, 80, 2, false); }});
  v.push_back({"glu silu", false, [](Backend& b, Backend& r) { return check_glu(b, r, FfnActivation::Silu, 3, 1537); }});
  v.push_back({"glu gelu", false, [](Backend& b, Backend& r) { return check_glu(b, r, FfnActivation::GeluTanh, 3, 1537); }});
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1,
                       TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K})
    for (int64_t m : {1, 3, 13})
      for (backend::Order o : {backend::Order::Batch, backend::Order::PerToken})
        v.push_back({"matmul", false, [=](Backend& b, Backend& r) { return check_matmul(b, r, t, 67, 512, m, o); }});
  const std::vector<AttnCase> cases = {
      {9, 3, 64, {1}, 0},             // SmolLM2 shape, one decode
      {9, 3, 64, {1, 1, 5, 1}, 0},    // decodes of several sequences and a prompt chunk together
      {14, 2, 64, {3, 1}, 0},         // Qwen2.5: groups of 7
      {4, 1, 256, {1, 9}, 16},        // Gemma 3: head 256, one KV head, a sliding window
      {8, 8, 128, {2, 1}, 0},         // no GQA, head 128
      {6, 2, 80, {1, 4}, 5},          // head 80 (not a multiple of 64), a short window
  };
  for (size_t i = 0; i < cases.size(); ++i)
    v.push_back({"attention", false, [c = cases[i], i](Backend& b, Backend& r) { return check_attention(b, r, c, static_cast<uint32_t>(40 + i)); }});
  // The cache formats (K and V types apart, rotated or not) on the shapes above that can hold them.
  const KvType F32 = KvType::f32, F16 = KvType::f16, BF16 = KvType::bf16, Q8 = KvType::q8_0, Q4 = KvType::q4_0;
  const std::vector<KvCacheFormat> formats = {
      {F16, F16, false, false}, {BF16, BF16, false, false}, {Q8, Q8, false, false}, {Q4, Q4, false, false},
      {Q8, Q8, true, true},     {Q4, Q4, true, true},       {Q8, F16, true, false}, {F32, Q4, false, true},
      {F16, Q8, false, false},  {F32, F32, true, true},
  };
  // Long lists: single-token rows of >= 1024 keys are split over threads in chunks of 512 and merged
  // (attention_kv_split.cpp); a window can start inside a chunk.
  for (const KvCacheFormat& f : {formats[0], formats[4], formats[7]}) {
    v.push_back({"attention split " + kv_format_name(f), false, [f](Backend& b, Backend& r) {
                   return check_attention(b, r, AttnCase{9, 3, 64, {1, 1, 3}, 0, f, 1500}, 300);
                 }});
    v.push_back({"attention split window " + kv_format_name(f), false, [f](Backend& b, Backend& r) {
                   return check_attention(b, r, AttnCase{4, 1, 256, {1}, 1300, f, 1400}, 301);
                 }});
  }
  for (size_t i = 0; i < cases.size(); ++i)
    for (size_t f = 0; f < formats.size(); ++f) {
      AttnCase c = cases[i];
      c.format = formats[f];
      const bool blocks = kv_type_is_quantized(c.format.k) || kv_type_is_quantized(c.format.v);
      if ((blocks && c.head_dim % 32 != 0) || ((c.format.rotate_k || c.format.rotate_v) && c.head_dim % 64 != 0)) continue;
      v.push_back({"attention " + kv_format_name(c.format), false, [c, i, f](Backend& b, Backend& r) {
                     return check_attention(b, r, c, static_cast<uint32_t>(100 + 17 * i + f));
                   }});
    }
  return v;
}

TEST(BackendParity, EveryOpOfEveryBackendAgainstTheReference) {
  auto ref = backend::make_backend("reference", 1);
  for (const std::string& name : backend::backend_names()) {
    if (name == "reference") continue;
    for (int threads : {1, 2}) {
      auto be = backend::make_backend(name, threads);
      SCOPED_TRACE(name + ", " + std::to_string(threads) + " threads");
      for (const Check& c : all_checks()) {
        const Verdict v = c.run(*be, *ref);
        EXPECT_TRUE(v.ok) << c.name << ": " << v.what;
      }
    }
  }
}

// The reference against itself: the checks are not vacuous in the other direction either (a check
// that compared a backend with itself would pass anything).
TEST(BackendParity, ReferenceAgreesWithItself) {
  auto ref = backend::make_backend("reference", 1), ref2 = backend::make_backend("reference", 1);
  for (const Check& c : all_checks()) EXPECT_TRUE(c.run(*ref2, *ref).ok) << c.name;
}

// The CPU backend with one output element of one op moved by one ulp.
class Nudged final : public Backend {
 public:
  explicit Nudged(std::string op) : op_(std::move(op)), cpu_(backend::make_cpu_backend(1)) {}
  std::string name() const override { return "nudged"; }
  int n_threads() const override { return 1; }
  bool host_visible() const override { return true; }
  Buffer alloc(size_t n) override { return cpu_->alloc(n); }
  void upload(const float* h, Mat d) override { cpu_->upload(h, d); }
  void download(const Mat& s, float* h) override { cpu_->download(s, h); }
  void copy(const Mat& s, Mat d) override { cpu_->copy(s, d), nudge("copy", d); }
  using Backend::new_cache;
  std::unique_ptr<KvCache> new_cache(int l, int h, int d, const KvCacheFormat& f) override { return cpu_->new_cache(l, h, d, f); }
  void embed(const WeightView& t, std::span<const int32_t> tok, float s, Mat x) override { cpu_->embed(t, tok, s, x), nudge("embed", x); }
  void rms_norm(const Mat& x, const float* w, float eps, Mat o) override { cpu_->rms_norm(x, w, eps, o), nudge("rms_norm", o); }
  void matmul(const WeightView& w, const Mat& x, Mat y, backend::Order o) override { cpu_->matmul(w, x, y, o); }
  void add_bias(Mat y, const float* b) override { cpu_->add_bias(y, b), nudge("add_bias", y); }
  void add(Mat y, const Mat& x) override { cpu_->add(y, x), nudge("add", y); }
  void scale(Mat y, float s) override { cpu_->scale(y, s), nudge("scale", y); }
  void glu(Mat g, const Mat& u, FfnActivation a) override { cpu_->glu(g, u, a); }
  void softcap(Mat y, float c) override { cpu_->softcap(y, c), nudge("softcap", y); }
  void rope_table(const backend::Rope& r, std::span<const int64_t> p, Mat t) override { cpu_->rope_table(r, p, t), nudge("rope_table", t); }
  void rope(const backend::Rope& r, const Mat& t, Mat x, int n) override { cpu_->rope(r, t, x, n), nudge("rope", x); }
  void kv_append(KvCache& c, int l, const Mat& k, const Mat& v) override {
    if (op_ != "kv_append") return cpu_->kv_append(c, l, k, v);
    std::vector<float> kk(static_cast<size_t>(k.rows * k.cols));
    cpu_->download(k, kk.data());
    kk[0] = std::nextafter(kk[0], std::numeric_limits<float>::infinity());
    cpu_->kv_append(c, l, Mat{kk.data(), k.rows, k.cols, k.cols}, v);
  }
  void attention(const AttentionCall& c, const Mat& q, Mat out) override { cpu_->attention(c, q, out); }

 private:
  void nudge(const char* op, Mat m) {
    if (op_ == op && m.rows > 0) m.data[m.ld * (m.rows - 1) + m.cols / 2] = std::nextafter(m.data[m.ld * (m.rows - 1) + m.cols / 2], INFINITY);
  }
  std::string op_;
  std::unique_ptr<Backend> cpu_;
};

TEST(BackendParity, AOneUlpChangeInABitForBitOpIsCaught) {
  auto ref = backend::make_backend("reference", 1);
  const std::vector<std::pair<std::string, std::string>> ops = {
      {"embed", "embed"}, {"rms_norm", "rms_norm"}, {"add_bias", "elementwise"}, {"add", "elementwise"},
      {"scale", "elementwise"}, {"softcap", "elementwise"}, {"copy", "copy"}, {"rope_table", "rope"},
      {"rope", "rope"}, {"kv_append", "attention"}};
  const auto checks = all_checks();
  for (const auto& [op, check] : ops) {
    Nudged be(op);
    bool caught = false;
    for (const Check& c : checks)
      if (c.name.rfind(check, 0) == 0 && !c.run(be, *ref).ok) caught = true;
    EXPECT_TRUE(caught) << "a one-ulp change in " << op << " passed the " << check << " checks";
  }
  // And the unchanged CPU backend passes them (the nudge, not something else, is what fails).
  Nudged clean("none");
  for (const Check& c : checks) EXPECT_TRUE(c.run(clean, *ref).ok) << c.name;
}

}  // namespace
}  // namespace tappa
