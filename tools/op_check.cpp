// op_check: feeds llama.cpp's own intermediate tensors (written by scripts/oracle/dump_tensors) into
// tappa's ops for one layer and counts the elements that are not bit-identical. A debugging aid for
// the bit-level agreement work in docs/ORACLE.md; built by hand, not part of the test suite:
//   g++ -std=c++20 -O2 -march=native -Iinclude -Isrc tools/op_check.cpp build/libtappa_core.a \
//       -lpthread -o build/op_check
//   build/op_check MODEL DUMP_DIR/CALL LAYER N_PAST
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/thread_pool.h"
#include "model/weights.h"
#include "quant/quant.h"
#include "tappa/model.h"

using namespace tappa;

struct T {
  int64_t ne[4] = {0, 0, 0, 0};
  std::vector<float> v;
  bool ok = false;
};

T load(const std::string& path) {
  T t;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return t;
  if (std::fread(t.ne, sizeof(int64_t), 4, f) != 4) return t;
  t.v.resize(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
  t.ok = std::fread(t.v.data(), 4, t.v.size(), f) == t.v.size();
  std::fclose(f);
  return t;
}

void report(const char* what, const float* ours, const float* ref, size_t n) {
  size_t bad = 0;
  double maxd = 0;
  size_t first = n;
  for (size_t i = 0; i < n; ++i) {
    uint32_t a, b;
    std::memcpy(&a, ours + i, 4);
    std::memcpy(&b, ref + i, 4);
    if (a != b && !(ours[i] == 0 && ref[i] == 0)) {
      ++bad;
      if (first == n) first = i;
      maxd = std::max(maxd, std::fabs(static_cast<double>(ours[i]) - ref[i]));
    }
  }
  std::printf("%-14s %8zu / %8zu differ, max |d| %.3g", what, bad, n, maxd);
  if (first < n) std::printf("  (first at %zu: %.9g vs %.9g)", first, ours[first], ref[first]);
  std::printf("\n");
}

int main(int argc, char** argv) {
  if (argc < 5) { std::fprintf(stderr, "usage: op_check MODEL DIR LAYER N_PAST\n"); return 1; }
  auto model = Model::load(argv[1]);
  const std::string dir = argv[2];
  const int il = std::atoi(argv[3]);
  const int n_past = std::atoi(argv[4]);
  const ModelConfig& c = model->config();
  const ModelWeights& w = model->weights();
  const LayerWeights& L = w.layers[il];
  cpu::ThreadPool pool(1);
  cpu::Scratch scratch;
  const std::string sfx = "-" + std::to_string(il) + ".f32";
  T attn_norm = load(dir + "/attn_norm" + sfx), norm = load(dir + "/norm" + sfx);
  T Q = load(dir + "/Qcur" + sfx), K = load(dir + "/Kcur" + sfx), V = load(dir + "/Vcur" + sfx);
  T kq = load(dir + "/kq" + sfx), sm = load(dir + "/kq_soft_max" + sfx), kqv = load(dir + "/kqv" + sfx);
  T attn_out = load(dir + "/attn_out" + sfx), ffn_inp = load(dir + "/ffn_inp" + sfx);
  T ffn_norm = load(dir + "/ffn_norm" + sfx), gate = load(dir + "/ffn_gate" + sfx), up = load(dir + "/ffn_up" + sfx);
  T swiglu = load(dir + "/ffn_swiglu" + sfx), ffn_out = load(dir + "/ffn_out" + sfx), l_out = load(dir + "/l_out" + sfx);
  const int E = c.n_embd, HD = c.head_dim, NH = c.n_head, NKV = c.n_head_kv;
  const int n = static_cast<int>(attn_norm.ne[1]);
  std::printf("layer %d, %d tokens, n_past %d\n", il, n, n_past);
  std::vector<float> buf;

  // attn_norm from the layer input: layer 0's input is the embedding (exact dequantisation).
  T prev = il > 0 ? load(dir + "/l_out-" + std::to_string(il - 1) + ".f32") : T{};
  if (il == 0 || prev.ok) {
    std::vector<float> in(static_cast<size_t>(n) * E), out(in.size());
    if (il == 0) {
      std::fprintf(stderr, "(layer 0 input needs the token ids; skipped)\n");
    } else {
      in = prev.v;
      for (int i = 0; i < n; ++i) cpu::rms_norm_row(in.data() + i * E, L.attn_norm, out.data() + i * E, E, c.rms_eps);
      report("attn_norm", out.data(), attn_norm.v.data(), out.size());
    }
  }
  // q, k, v projections + RoPE on llama.cpp's attn_norm.
  {
    std::vector<float> q(static_cast<size_t>(n) * NH * HD), k(static_cast<size_t>(n) * NKV * HD), v(k.size());
    cpu::matmul(L.wq, attn_norm.v.data(), n, E, q.data(), NH * HD, pool, scratch);
    cpu::matmul(L.wk, attn_norm.v.data(), n, E, k.data(), NKV * HD, pool, scratch);
    cpu::matmul(L.wv, attn_norm.v.data(), n, E, v.data(), NKV * HD, pool, scratch);
    report("Vcur", v.data(), V.v.data(), v.size());
    cpu::RopeParams rope{c.n_rot, HD, c.rope_base, c.rope_freq_scale, w.rope_freqs, c.rope_layout == RopeLayout::Neox, nullptr};
    std::vector<float> cs(c.n_rot);
    for (int i = 0; i < n; ++i) {
      cpu::rope_angles(rope, n_past + i, cs.data());
      cpu::rope_apply(rope, cs.data(), q.data() + static_cast<size_t>(i) * NH * HD, NH);
      cpu::rope_apply(rope, cs.data(), k.data() + static_cast<size_t>(i) * NKV * HD, NKV);
    }
    report("Qcur(rope)", q.data(), Q.v.data(), q.size());
    report("Kcur(rope)", k.data(), K.v.data(), k.size());
  }
  // Attention on llama.cpp's Q, K, V. kq is [n_kv][n][NH]; only the batch's own keys are dumped
  // for n_past == 0 (the cache holds exactly them).
  if (n_past == 0 && kq.ok) {
    const int n_kv = static_cast<int>(kq.ne[0]);
    std::vector<float> Kh(static_cast<size_t>(n) * HD), Vh(Kh.size()), probs(n_kv), out(HD);
    std::vector<float> my_kq(kq.v.size(), 0.0f), my_sm(sm.v.size(), 0.0f), my_kqv(kqv.v.size(), 0.0f);
    for (int h = 0; h < NH; ++h) {
      const int kvh = h / (NH / NKV);
      for (int j = 0; j < n; ++j)
        for (int d = 0; d < HD; ++d) {
          Kh[j * HD + d] = K.v[(static_cast<size_t>(j) * NKV + kvh) * HD + d];
          Vh[j * HD + d] = V.v[(static_cast<size_t>(j) * NKV + kvh) * HD + d];
        }
      for (int i = 0; i < n; ++i) {
        cpu::AttentionRow row;
        row.q = Q.v.data() + (static_cast<size_t>(i) * NH + h) * HD;
        row.K = Kh.data();
        row.V = Vh.data();
        row.n_vis = i + 1;
        row.head_dim = HD;
        row.scale = 1.0f / std::sqrt(static_cast<float>(HD));
        row.single_token = n == 1;
        cpu::attention_row(row, probs.data(), out.data());
        for (int j = 0; j <= i; ++j) my_sm[(static_cast<size_t>(h) * n + i) * n_kv + j] = probs[j];
        for (int d = 0; d < HD; ++d) my_kqv[(static_cast<size_t>(h) * n + i) * HD + d] = out[d];
      }
    }
    report("kq_soft_max", my_sm.data(), sm.v.data(), my_sm.size());
    report("kqv", my_kqv.data(), kqv.v.data(), my_kqv.size());
  }
  // Output projection on llama.cpp's kqv (permuted to [n][NH*HD]).
  if (kqv.ok) {
    std::vector<float> a(static_cast<size_t>(n) * NH * HD), o(static_cast<size_t>(n) * E);
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < n; ++i)
        for (int d = 0; d < HD; ++d) a[(static_cast<size_t>(i) * NH + h) * HD + d] = kqv.v[(static_cast<size_t>(h) * n + i) * HD + d];
    cpu::matmul(L.wo, a.data(), n, NH * HD, o.data(), E, pool, scratch);
    report("attn_out(wo)", o.data(), attn_out.v.data(), o.size());
  }
  // FFN on llama.cpp's ffn_inp.
  {
    std::vector<float> xn(static_cast<size_t>(n) * E), g(static_cast<size_t>(n) * c.n_ff), u(g.size()), s(g.size()), o(xn.size());
    for (int i = 0; i < n; ++i) cpu::rms_norm_row(ffn_inp.v.data() + i * E, L.ffn_norm, xn.data() + i * E, E, c.rms_eps);
    report("ffn_norm", xn.data(), ffn_norm.v.data(), xn.size());
    cpu::matmul(L.w_gate, ffn_norm.v.data(), n, E, g.data(), c.n_ff, pool, scratch);
    cpu::matmul(L.w_up, ffn_norm.v.data(), n, E, u.data(), c.n_ff, pool, scratch);
    report("ffn_gate", g.data(), gate.v.data(), g.size());
    report("ffn_up", u.data(), up.v.data(), u.size());
    cpu::silu_mul(gate.v.data(), up.v.data(), s.data(), static_cast<int64_t>(s.size()));
    report("ffn_swiglu", s.data(), swiglu.v.data(), s.size());
    cpu::matmul(L.w_down, swiglu.v.data(), n, c.n_ff, o.data(), E, pool, scratch);
    report("ffn_out", o.data(), ffn_out.v.data(), o.size());
  }
  return 0;
}
