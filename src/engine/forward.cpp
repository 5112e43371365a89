// The forward pass of llama-family decoders (llama, qwen2) and Gemma 3, for a batch of sequences:
//   x = embed(tokens)                                          (gemma3: times sqrt(n_embd))
//   per block: x += Wo · attn(rope(Wq·n(x) + bq), rope(Wk·n(x) + bk), Wv·n(x) + bv)
//              x += Wdown · (act(Wgate·n(x)) * Wup·n(x))
//   logits = Wout · norm(x)
// Gemma 3 adds: RMSNorm of each Q/K head before RoPE (QK-norm), an RMSNorm of the attention and FFN
// outputs before each residual add (sandwich norms), GeLU-tanh instead of SiLU, and sliding-window
// (local) layers that see only the last n_swa keys and rotate with their own RoPE base.
//
// Everything below is backend op calls and bookkeeping; the arithmetic is the backend's.
//
// Rows. The residual stream x of a call holds every token of every step: the one-token steps
// (decodes) first, then each longer step's tokens (a prompt chunk). They pass the layers in chunks:
// one chunk of all decode rows, computed in the backend's per-token order (each row exactly as it
// would be alone, so a sequence's tokens do not depend on what else is in the batch), then each
// prompt in slices of n_batch rows counted from its own first token (the chunking it gets alone).
//
// Layer-major. Every chunk passes layer l before any passes layer l + 1. Results are the same as
// token-major order (causal attention only looks back), but a KV policy can compress layer l as soon
// as it holds the whole prompt: peak cache memory is then the compressed layers plus one full layer.
#include "engine/forward.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "model/weights.h"
#include "tappa/error.h"

namespace tappa {

using backend::Mat;
using backend::Order;

namespace {

// One step of the call, as laid out in x.
struct Seg {
  Sequence::Impl* seq = nullptr;
  std::span<const int32_t> tokens;
  int n = 0;
  bool all_logits = false;
  int64_t row0 = 0;         // first row in x
  int tail_rows = 0;        // prefill policy: last query rows it receives (0: no prefill hook)
  bool decode_hook = false; // policy receives this decode step's attention
  bool greedy = false;      // one-token step that keeps only its argmax (Step::greedy)
};

// Rows [row0, row0 + n) of x that pass the layer ops together: segments [seg0, seg1), the first
// starting at row seg_row0 of its own tokens.
struct Chunk {
  int64_t row0 = 0, n = 0;
  Order order = Order::Batch;
  int seg0 = 0, seg1 = 0;
  int64_t seg_row0 = 0;
};

}  // namespace

struct Engine::Forward::Workspace {
  // Whole call: the residual stream and the RoPE tables of every row.
  backend::Buffer x, cos_sin, cos_sin_local;
  int64_t rows_cap = 0;
  // One chunk.
  backend::Buffer xn, q, k, v, attn, gate, up, q_pre, k_pre, block_in;
  int64_t chunk_cap = 0;
  // Rows the observers' buffers (q_pre, k_pre, block_in) hold: grown only by calls that observe, so
  // they can trail chunk_cap (a larger call without observers in between) and are checked on their own.
  int64_t observe_cap = 0;
  backend::Buffer logits;  // decode rows' logits (and non-host backends' prompt logits)
  int64_t logits_cap = 0;
  std::vector<float> staging;  // host copies for hooks when the backend's memory is not host memory
};

struct Engine::Forward::Plan {
  std::vector<Seg> segs;
  std::vector<Chunk> chunks;
  std::vector<int32_t> tokens;    // per row of x
  std::vector<int64_t> positions; // per row of x
  std::vector<backend::AttentionSeq> attn;
  std::vector<backend::AttentionSeq> attn_qh;  // sequences whose caches hold one list per query head
  std::vector<int> saved_lengths; // per seg, layer, list (n_head slots each): lengths before the call (rollback)
  int n_decode = 0;               // decode segments (the first ones)
  std::vector<int32_t> greedy_ids; // argmax of each decode row (greedy steps)
};

namespace {

// Hands attention rows to observers and to decode hooks (from the backend's threads).
class Taps final : public backend::AttentionTaps {
 public:
  Taps(std::vector<Seg>& segs, int layer, int64_t seg_row0, bool observe) : segs_(segs), layer_(layer), seg_row0_(seg_row0), observe_(observe) {}
  bool wants(int s, int head, int row) override {
    const Seg& g = segs_[s];
    if (g.decode_hook) return true;
    return observe_ && g.seq->observer && g.seq->observer->wants_attention_row(layer_, head, pos(g, row));
  }
  void on_row(int s, int head, int row, const float* probs, int n) override {
    Seg& g = segs_[s];
    const int64_t p = pos(g, row);
    if (observe_ && g.seq->observer && g.seq->observer->wants_attention_row(layer_, head, p))
      g.seq->observer->on_attention_row(layer_, head, p, probs, n);
    if (g.decode_hook) {
      const size_t stride = static_cast<size_t>(g.seq->n_ctx);
      std::memcpy(g.seq->decode_probs.data() + static_cast<size_t>(head) * stride, probs, sizeof(float) * n);
    }
  }

 private:
  int64_t pos(const Seg& g, int row) const { return g.seq->n_past + (g.n == 1 ? 0 : seg_row0_) + row; }
  std::vector<Seg>& segs_;
  int layer_;
  int64_t seg_row0_;
  bool observe_;
};

// Rows of a backend matrix as host memory: the matrix itself on a host backend, else a copy.
const float* host_rows(backend::Backend& be, const Mat& m, std::vector<float>& staging) {
  if (be.host_visible() && m.ld == m.cols) return m.data;
  staging.resize(static_cast<size_t>(m.rows * m.cols));
  be.download(m, staging.data());
  return staging.data();
}

void grow(backend::Backend& be, backend::Buffer& b, size_t n) {
  if (b.size() < n) b = be.alloc(n);
}

}  // namespace

Engine::Forward::Forward(const Model& model, backend::Backend& be, int n_batch)
    : model_(model), be_(be), n_batch_(n_batch), ws_(std::make_unique<Workspace>()), plan_(std::make_unique<Plan>()) {}

Engine::Forward::~Forward() = default;

void Engine::Forward::run(std::span<const Step> steps, const std::vector<char>& skip, const float* rope_inv_freq,
                          const RunControl& control) {
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  Workspace& ws = *ws_;
  Plan& plan = *plan_;
  const int E = c.n_embd, HD = c.head_dim, QD = c.n_head * HD, KD = c.n_head_kv * HD;

  // --- plan: rows, chunks, hooks -----------------------------------------------------------------
  plan.segs.clear();
  plan.chunks.clear();
  plan.n_decode = 0;
  for (int pass = 0; pass < 2; ++pass) {  // decodes first, then prompts
    for (const Step& st : steps) {
      const bool one = st.tokens.size() == 1;
      if (one != (pass == 0)) continue;
      Seg g;
      g.seq = &st.seq->impl();
      g.tokens = st.tokens;
      g.n = static_cast<int>(st.tokens.size());
      g.all_logits = st.all_logits;
      KvPolicy* pol = g.seq->policy;
      g.tail_rows = pol && g.n >= 2 ? std::min(g.n, pol->prefill_query_rows()) : 0;
      g.decode_hook = pol && g.n == 1 && pol->wants_decode_attention();
      g.greedy = one && st.greedy;
      plan.segs.push_back(g);
      if (one) ++plan.n_decode;
    }
  }
  int64_t rows = 0;
  for (Seg& g : plan.segs) {
    g.row0 = rows;
    rows += g.n;
  }
  int64_t chunk_cap = 0;
  if (plan.n_decode > 0) {
    plan.chunks.push_back({0, plan.n_decode, Order::PerToken, 0, plan.n_decode, 0});
    chunk_cap = plan.n_decode;
  }
  for (int s = plan.n_decode; s < static_cast<int>(plan.segs.size()); ++s) {
    const Seg& g = plan.segs[s];
    for (int64_t b = 0; b < g.n; b += n_batch_) {
      const int64_t nb = std::min<int64_t>(n_batch_, g.n - b);
      plan.chunks.push_back({g.row0 + b, nb, Order::Batch, s, s + 1, b});
      chunk_cap = std::max(chunk_cap, nb);
    }
  }
  plan.tokens.resize(rows);
  plan.positions.resize(rows);
  bool observe = false;
  for (const Seg& g : plan.segs) {
    for (int i = 0; i < g.n; ++i) {
      plan.tokens[g.row0 + i] = g.tokens[i];
      plan.positions[g.row0 + i] = g.seq->n_past + i;
    }
    observe = observe || g.seq->observer != nullptr;
    if (g.tail_rows > 0) {
      g.seq->q_tail.resize(static_cast<size_t>(g.tail_rows) * QD);
      g.seq->q_pre_tail.resize(static_cast<size_t>(g.tail_rows) * QD);
    }
    if (g.decode_hook) {
      const size_t stride = static_cast<size_t>(g.seq->n_ctx);
      if (g.seq->decode_probs.size() < stride * c.n_head) g.seq->decode_probs.resize(stride * c.n_head);
      g.seq->decode_prob_ptrs.resize(c.n_head);
      for (int h = 0; h < c.n_head; ++h) g.seq->decode_prob_ptrs[h] = g.seq->decode_probs.data() + h * stride;
    }
  }
  // Rollback state: every list's length before the call. A cache holds n_head_kv lists per layer, or
  // n_head after query-head compression (KvCache::repeat_lists): room for n_head each.
  const size_t lists = static_cast<size_t>(c.n_layer) * c.n_head;
  plan.saved_lengths.resize(plan.segs.size() * lists);
  for (size_t s = 0; s < plan.segs.size(); ++s) {
    const KvCache& kc = *plan.segs[s].seq->cache;
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < kc.n_head_kv(); ++h) plan.saved_lengths[s * lists + l * c.n_head + h] = kc.length(l, h);
  }

  // --- workspace (grows, never shrinks: a decode loop allocates nothing) ---------------------------
  if (rows > ws.rows_cap) {
    ws.x = be_.alloc(static_cast<size_t>(rows) * E);
    ws.cos_sin = be_.alloc(static_cast<size_t>(rows) * c.n_rot);
    if (c.n_swa > 0) ws.cos_sin_local = be_.alloc(static_cast<size_t>(rows) * c.n_rot);
    ws.rows_cap = rows;
  }
  if (chunk_cap > ws.chunk_cap) {
    const size_t N = static_cast<size_t>(chunk_cap);
    grow(be_, ws.xn, N * E);
    grow(be_, ws.q, N * QD);
    grow(be_, ws.k, N * KD);
    grow(be_, ws.v, N * KD);
    grow(be_, ws.attn, N * QD);
    grow(be_, ws.gate, N * c.n_ff);
    grow(be_, ws.up, N * c.n_ff);
    ws.chunk_cap = chunk_cap;
  }
  if (observe && chunk_cap > ws.observe_cap) {
    const size_t N = static_cast<size_t>(chunk_cap);
    grow(be_, ws.q_pre, N * QD);
    grow(be_, ws.k_pre, N * KD);
    grow(be_, ws.block_in, N * E);
    ws.observe_cap = chunk_cap;
  }
  const Mat X = ws.x.mat(rows, E);

  // --- embeddings and RoPE tables (positions only: shared by all layers) --------------------------
  be_.embed(w.token_embd, plan.tokens, c.embd_scale, X);
  backend::Rope rope{c.n_rot, HD, c.rope_base, c.rope_freq_scale, w.rope_freqs, c.rope_layout == RopeLayout::Neox, rope_inv_freq};
  be_.rope_table(rope, plan.positions, ws.cos_sin.mat(rows, c.n_rot));
  // Local (sliding-window) layers rotate with their own base and no scaling; an override applies to all.
  backend::Rope rope_local = rope;
  rope_local.base = c.rope_base_local;
  rope_local.freq_scale = 1.0f;
  rope_local.freq_factors = nullptr;
  if (c.n_swa > 0) be_.rope_table(rope_local, plan.positions, ws.cos_sin_local.mat(rows, c.n_rot));

  for (const Seg& g : plan.segs)
    if (g.tail_rows > 0) g.seq->policy->on_prefill_begin(g.n, g.seq->n_past);

  const auto rollback = [&] {
    for (size_t s = 0; s < plan.segs.size(); ++s) {
      Sequence::Impl& q = *plan.segs[s].seq;
      if (plan.segs[s].tail_rows > 0) {  // the policy may have evicted: the state before is gone
        q.cache->clear();
        q.n_past = 0;
        q.tokens.clear();
        continue;
      }
      for (int l = 0; l < c.n_layer; ++l)
        for (int h = 0; h < q.cache->n_head_kv(); ++h) q.cache->keep_first(l, h, plan.saved_lengths[s * lists + l * c.n_head + h]);
    }
  };

  const float kq_scale = c.softmax_scale();
  int64_t layers_done = 0;
  const int64_t layers_total = std::count(skip.begin(), skip.end(), 0);
  for (int l = 0; l < c.n_layer; ++l) {
    if (skip[l]) continue;
    if (control.cancelled()) {
      rollback();
      throw Error(ErrorCode::cancelled, "cancelled");
    }
    const LayerWeights& L = w.layers[l];
    const int window = c.window(l);  // 0: global layer
    const backend::Rope& layer_rope = window > 0 ? rope_local : rope;
    const backend::Buffer& layer_table = window > 0 ? ws.cos_sin_local : ws.cos_sin;
    for (const Seg& g : plan.segs) g.seq->cache->reserve_extra(l, g.n);  // per layer: earlier ones may be compressed

    for (const Chunk& ch : plan.chunks) {
      const int64_t nb = ch.n;
      const Mat Xc = X.row_range(ch.row0, nb);
      const Mat XN = ws.xn.mat(nb, E), Q = ws.q.mat(nb, QD), K = ws.k.mat(nb, KD), V = ws.v.mat(nb, KD);
      const Mat A = ws.attn.mat(nb, QD), G = ws.gate.mat(nb, c.n_ff), U = ws.up.mat(nb, c.n_ff);
      bool obs_layer = false;
      for (int s = ch.seg0; s < ch.seg1; ++s) {
        Observer* ob = plan.segs[s].seq->observer;
        obs_layer = obs_layer || (ob && ob->wants_layer(l));
      }
      if (obs_layer) be_.copy(Xc, ws.block_in.mat(nb, E));

      // --- attention ---
      be_.rms_norm(Xc, L.attn_norm, c.rms_eps, XN);
      const WeightView* qkv_w[3] = {&L.wq, &L.wk, &L.wv};
      const Mat qkv_y[3] = {Q, K, V};
      be_.matmul_many(qkv_w, XN, qkv_y, ch.order);
      if (L.bq) be_.add_bias(Q, L.bq);
      if (L.bk) be_.add_bias(K, L.bk);
      if (L.bv) be_.add_bias(V, L.bv);
      if (L.q_norm) {
        // QK-norm (gemma3): each head normalised on its own, before RoPE. Observers and policies see
        // the normalised vectors as "pre-RoPE", since those are what RoPE rotates.
        be_.rms_norm(Q.reshaped(HD), L.q_norm, c.rms_eps, Q.reshaped(HD));
        be_.rms_norm(K.reshaped(HD), L.k_norm, c.rms_eps, K.reshaped(HD));
      }
      if (obs_layer) {
        be_.copy(Q, ws.q_pre.mat(nb, QD));
        be_.copy(K, ws.k_pre.mat(nb, KD));
      }
      // A policy's query rows: the rows of this chunk among its prompt's last tail_rows.
      const auto tail = [&](const Mat& M, std::vector<float> Sequence::Impl::*dst) {
        for (int s = ch.seg0; s < ch.seg1; ++s) {
          const Seg& g = plan.segs[s];
          if (g.tail_rows == 0) continue;
          const int64_t first = std::max<int64_t>(ch.seg_row0, g.n - g.tail_rows), last = ch.seg_row0 + nb;
          if (first >= last) continue;
          be_.download(M.row_range(first - ch.seg_row0, last - first),
                       ((*g.seq).*dst).data() + (first - (g.n - g.tail_rows)) * QD);
        }
      };
      tail(Q, &Sequence::Impl::q_pre_tail);
      const Mat table = layer_table.mat(rows, c.n_rot).row_range(ch.row0, nb);
      be_.rope_qk(layer_rope, table, Q, c.n_head, K, c.n_head_kv);
      tail(Q, &Sequence::Impl::q_tail);

      plan.attn.clear();
      plan.attn_qh.clear();
      for (int s = ch.seg0; s < ch.seg1; ++s) {
        const Seg& g = plan.segs[s];
        const int64_t r0 = g.n == 1 ? g.row0 - ch.row0 : 0;  // row of the segment in this chunk
        const int64_t n_rows = g.n == 1 ? 1 : nb;
        Observer* ob = g.seq->observer;
        if (ob && ob->wants_layer(l)) {
          std::vector<float>& st = ws.staging;
          const float* qp = host_rows(be_, ws.q_pre.mat(nb, QD).row_range(r0, n_rows), st);
          // Each pointer needs its own host copy when the backend is not host memory.
          std::vector<float> kp_st, q_st, k_st;
          const float* kp = host_rows(be_, ws.k_pre.mat(nb, KD).row_range(r0, n_rows), kp_st);
          const float* qq = host_rows(be_, Q.row_range(r0, n_rows), q_st);
          const float* kk = host_rows(be_, K.row_range(r0, n_rows), k_st);
          LayerQk qk{l, g.seq->n_past + (g.n == 1 ? 0 : ch.seg_row0), static_cast<int>(n_rows), c.n_head, c.n_head_kv, HD,
                     qp, kp, qq, kk};
          ob->on_qk(qk);
        }
        be_.kv_append(*g.seq->cache, l, K.row_range(r0, n_rows), V.row_range(r0, n_rows));
        const bool per_query_head = g.seq->cache->n_head_kv() != c.n_head_kv;  // n_head lists, group 1
        (per_query_head ? plan.attn_qh : plan.attn).push_back({g.seq->cache.get(), r0, static_cast<int>(n_rows), s});
      }
      Taps taps(plan.segs, l, ch.seg_row0, obs_layer);
      bool want_taps = obs_layer;
      for (int s = ch.seg0; s < ch.seg1; ++s) want_taps = want_taps || plan.segs[s].decode_hook;
      // Each row's result depends only on its own sequence's lists, so sequences of the two cache
      // layouts go to two calls without changing any result (kv-head alone: one call, as before).
      if (!plan.attn.empty()) {
        backend::AttentionCall call{l, c.n_head, c.n_head_kv, HD, kq_scale, window, plan.attn, want_taps ? &taps : nullptr};
        be_.attention(call, Q, A);
      }
      if (!plan.attn_qh.empty()) {
        backend::AttentionCall call{l, c.n_head, c.n_head, HD, kq_scale, window, plan.attn_qh, want_taps ? &taps : nullptr};
        be_.attention(call, Q, A);
      }
      for (int s = ch.seg0; s < ch.seg1; ++s) {
        const Seg& g = plan.segs[s];
        if (g.decode_hook) g.seq->policy->on_decode_layer(l, g.seq->decode_prob_ptrs, *g.seq->cache);
      }
      if (L.post_attn_norm) {
        be_.matmul(L.wo, A, XN, ch.order);
        be_.rms_norm(XN, L.post_attn_norm, c.rms_eps, XN);
        be_.add(Xc, XN);
      } else {
        be_.matmul_add(L.wo, A, Xc, XN, ch.order);
      }

      // --- feed-forward ---
      be_.rms_norm(Xc, L.ffn_norm, c.rms_eps, XN);
      be_.matmul_glu(L.w_gate, L.w_up, XN, G, U, c.ffn_act, ch.order);
      if (L.post_ffn_norm) {
        be_.matmul(L.w_down, G, XN, ch.order);
        be_.rms_norm(XN, L.post_ffn_norm, c.rms_eps, XN);
        be_.add(Xc, XN);
      } else {
        be_.matmul_add(L.w_down, G, Xc, XN, ch.order);
      }
      if (obs_layer) {
        for (int s = ch.seg0; s < ch.seg1; ++s) {
          const Seg& g = plan.segs[s];
          Observer* ob = g.seq->observer;
          if (!ob || !ob->wants_layer(l)) continue;
          const int64_t r0 = g.n == 1 ? g.row0 - ch.row0 : 0, n_rows = g.n == 1 ? 1 : nb;
          std::vector<float> in_st, out_st;
          ob->on_block(l, host_rows(be_, ws.block_in.mat(nb, E).row_range(r0, n_rows), in_st),
                       host_rows(be_, Xc.row_range(r0, n_rows), out_st), static_cast<int>(n_rows), E);
        }
      }
    }
    for (const Seg& g : plan.segs) {
      if (g.tail_rows > 0) {
        PrefillLayerView view{l, g.seq->n_past, g.n, g.tail_rows, c.n_head, c.n_head_kv, HD, g.seq->q_tail.data(),
                              g.seq->q_pre_tail.data()};
        g.seq->policy->on_prefill_layer(view, *g.seq->cache);
      }
      // With a KV policy attached (compression), a local layer keeps only what its next query can
      // see: the last window - 1 rows (the query's own row makes the window). Rows before that are
      // invisible to every later query, so dropping them changes no result. Without a policy the
      // cache keeps all rows, so that observers can index attention rows by position.
      if (g.seq->policy != nullptr && window > 0) {
        for (int h = 0; h < g.seq->cache->n_head_kv(); ++h) {
          if (g.seq->cache->length(l, h) <= window - 1) continue;
          g.seq->cache->keep_last(l, h, window - 1);
          if (g.n > 1) g.seq->cache->shrink_to_fit(l, h);  // give a prompt's rows back
        }
      }
    }
    control.progress(++layers_done, layers_total);
  }
  for (const Seg& g : plan.segs)
    if (g.tail_rows > 0) g.seq->policy->on_prefill_done(*g.seq->cache);

  // --- final norm and output head -----------------------------------------------------------------
  const size_t V = static_cast<size_t>(c.n_vocab);
  if (plan.n_decode > 0) {
    const int64_t nd = plan.n_decode;
    const Mat Xd = X.row_range(0, nd), XN = ws.xn.mat(nd, E);
    be_.rms_norm(Xd, w.output_norm, c.rms_eps, XN);
    for (int s = 0; s < plan.n_decode; ++s) {
      const Seg& g = plan.segs[s];
      Observer* ob = g.seq->observer;
      if (!ob || !ob->wants_layer(c.n_layer)) continue;
      std::vector<float> in_st, out_st;
      ob->on_block(c.n_layer, host_rows(be_, Xd.row_range(s, 1), in_st), host_rows(be_, XN.row_range(s, 1), out_st), 1, E);
    }
    if (nd > ws.logits_cap) {
      ws.logits = be_.alloc(static_cast<size_t>(nd) * V);
      ws.logits_cap = nd;
    }
    const Mat LG = ws.logits.mat(nd, c.n_vocab);
    be_.matmul(w.output, XN, LG, Order::PerToken);
    if (c.final_logit_softcap > 0) be_.softcap(LG, c.final_logit_softcap);
    // Greedy steps get their token from the backend (on a GPU: without copying the logits out).
    bool any_greedy = false;
    for (int s = 0; s < plan.n_decode; ++s) any_greedy = any_greedy || plan.segs[s].greedy;
    if (any_greedy) {
      plan.greedy_ids.resize(static_cast<size_t>(nd));
      be_.argmax_rows(LG, plan.greedy_ids.data());
    }
    for (int s = 0; s < plan.n_decode; ++s) {
      Sequence::Impl& q = *plan.segs[s].seq;
      if (plan.segs[s].greedy) {
        q.logits.clear();
        q.greedy = plan.greedy_ids[s];
        continue;
      }
      q.greedy = -1;
      q.logits.resize(V);
      be_.download(LG.row_range(s, 1), q.logits.data());
    }
  }
  for (int s = plan.n_decode; s < static_cast<int>(plan.segs.size()); ++s) {
    const Seg& g = plan.segs[s];
    Sequence::Impl& q = *g.seq;
    const int n = g.n;
    q.greedy = -1;
    q.logits.resize((g.all_logits ? n : 1) * V);
    // Logits straight into the sequence's memory on a host backend; through the workspace otherwise.
    const bool direct = be_.host_visible();
    const int64_t out_rows = g.all_logits ? std::min<int64_t>(n, n_batch_) : 1;
    if (!direct && out_rows > ws.logits_cap) {
      ws.logits = be_.alloc(static_cast<size_t>(out_rows) * V);
      ws.logits_cap = out_rows;
    }
    const bool obs_final = q.observer && q.observer->wants_layer(c.n_layer);
    const int first = (g.all_logits || obs_final) ? 0 : n - 1;
    for (int b = first; b < n; b += n_batch_) {
      const int nb = std::min(n_batch_, n - b);
      const Mat Xc = X.row_range(g.row0 + b, nb), XN = ws.xn.mat(nb, E);
      be_.rms_norm(Xc, w.output_norm, c.rms_eps, XN);
      if (obs_final) {
        std::vector<float> in_st, out_st;
        q.observer->on_block(c.n_layer, host_rows(be_, Xc, in_st), host_rows(be_, XN, out_st), nb, E);
      }
      Mat out;
      float* dst = nullptr;
      if (g.all_logits) {
        dst = q.logits.data() + static_cast<size_t>(b) * V;
        out = direct ? Mat{dst, nb, c.n_vocab, c.n_vocab} : ws.logits.mat(nb, c.n_vocab);
        be_.matmul(w.output, XN, out, Order::Batch);
      } else if (b + nb == n) {
        dst = q.logits.data();
        out = direct ? Mat{dst, 1, c.n_vocab, c.n_vocab} : ws.logits.mat(1, c.n_vocab);
        be_.matmul(w.output, XN.row_range(nb - 1, 1), out, Order::Batch);
      } else {
        continue;
      }
      if (c.final_logit_softcap > 0) be_.softcap(out, c.final_logit_softcap);
      if (!direct) be_.download(out, dst);
    }
  }
}

}  // namespace tappa
