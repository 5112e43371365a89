// The forward pass of llama-family decoders (llama, qwen2) and Gemma 3:
//   x = embed(tokens)                                          (gemma3: times sqrt(n_embd))
//   per block: x += Wo · attn(rope(Wq·n(x) + bq), rope(Wk·n(x) + bk), Wv·n(x) + bv)
//              x += Wdown · (silu(Wgate·n(x)) * Wup·n(x))
//   logits = Wout · norm(x)
// Gemma 3 adds: RMSNorm of each Q/K head before RoPE (QK-norm), an RMSNorm of the attention and FFN
// outputs before each residual add (sandwich norms), GeLU-tanh instead of SiLU, and sliding-window
// (local) layers that see only the last n_swa keys and rotate with their own RoPE base.
// Activations are fp32 [n_tokens][features]; weights stay in their GGUF format. All buffers live in
// the Workspace, sized once for the batch and context, so the decode loop does not allocate.
#include "tappa/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cpu/attention.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/ops_gemma.h"
#include "backend/cpu/thread_pool.h"
#include "backend/cpu/vec.h"
#include "kv/kv_cache.h"
#include "kv/policy.h"
#include "model/weights.h"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa {

namespace {
// Query heads per KV head this engine handles (GQA group); checked when the engine is built.
constexpr int kMaxGroup = 64;
}  // namespace

struct Engine::Workspace {
  explicit Workspace(int n_threads) : pool(n_threads) {}
  cpu::ThreadPool pool;
  cpu::Scratch scratch;
  // Whole-call buffers: the residual stream and RoPE angles of every token of an eval call.
  std::vector<float> x, cos_sin, cos_sin_local;
  // Per-chunk buffers (n_batch tokens).
  int chunk_capacity = 0;
  std::vector<float> xn, q, k, v, attn, gate, up, q_pre, k_pre, block_in;
  // Query rows kept for a KV policy: the last `tail_rows` tokens of the call, post- and pre-RoPE.
  std::vector<float> q_tail, q_pre_tail;
  std::vector<std::vector<float>> scores;   // per thread, [n_ctx]
  std::vector<float> decode_probs;          // [n_head][n_ctx] for a policy's decode hook
  std::vector<int> kv_len0;                 // per KV head: cache length before this call

  void ensure(const ModelConfig& c, int n_tokens, int chunk, bool observe) {
    if (x.size() < static_cast<size_t>(n_tokens) * c.n_embd) {
      x.resize(static_cast<size_t>(n_tokens) * c.n_embd);
      cos_sin.resize(static_cast<size_t>(n_tokens) * c.n_rot);
      if (c.n_swa > 0) cos_sin_local.resize(cos_sin.size());
    }
    if (chunk > chunk_capacity) {
      const size_t N = static_cast<size_t>(chunk);
      xn.resize(N * c.n_embd);
      q.resize(N * c.n_head * c.head_dim);
      k.resize(N * c.n_head_kv * c.head_dim);
      v.resize(N * c.n_head_kv * c.head_dim);
      attn.resize(N * c.n_head * c.head_dim);
      gate.resize(N * c.n_ff);
      up.resize(N * c.n_ff);
      chunk_capacity = chunk;
      q_pre.clear();  // re-sized below if observing
    }
    if (observe && q_pre.size() < q.size()) {
      q_pre.resize(q.size());
      k_pre.resize(k.size());
      block_in.resize(xn.size());
    }
  }
};

Engine::Engine(const Model& model, const EngineOptions& options) : model_(model) {
  const ModelConfig& c = model.config();
  n_ctx_ = options.n_ctx > 0 ? options.n_ctx : c.n_ctx_train;
  if (n_ctx_ <= 0) throw Error("context size must be positive");
  n_batch_ = std::max(1, options.n_batch);
  const int threads = options.n_threads > 0 ? options.n_threads : cpu::default_thread_count();
  kv_ = std::make_unique<KvCache>(c.n_layer, c.n_head_kv, c.head_dim);
  ws_ = std::make_unique<Workspace>(threads);
  ws_->scores.resize(threads);
  skip_.assign(c.n_layer, 0);
  if (c.n_group() > kMaxGroup)
    throw Error("unsupported attention: " + std::to_string(c.n_group()) + " query heads per KV head (at most " +
                std::to_string(kMaxGroup) + ")");
}

Engine::~Engine() = default;

int Engine::n_threads() const { return ws_->pool.size(); }

void Engine::reset() {
  kv_->clear();
  n_past_ = 0;
}

void Engine::truncate(int64_t n) {
  if (n < 0 || n > n_past_) throw Error("truncate: position " + std::to_string(n) + " is outside the cache");
  if (policy_) throw Error("truncate: not available with a KV-compression policy");
  std::vector<int> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[i] = static_cast<int>(i);
  for (int l = 0; l < kv_->n_layer(); ++l)
    for (int h = 0; h < kv_->n_head_kv(); ++h)
      if (kv_->length(l, h) > n) kv_->keep_rows(l, h, rows);  // skipped layers hold no rows
  n_past_ = n;
}

void Engine::set_skip_layers(std::vector<int> layers) {
  skip_.assign(model_.config().n_layer, 0);
  for (int l : layers) {
    if (l < 0 || l >= model_.config().n_layer)
      throw Error("layer " + std::to_string(l) + " does not exist (the model has " +
                  std::to_string(model_.config().n_layer) + " layers)");
    skip_[l] = 1;
  }
}

void Engine::set_rope_frequencies(std::vector<float> inv_freq) {
  if (!inv_freq.empty() && static_cast<int>(inv_freq.size()) != model_.config().n_rot / 2)
    throw Error("set_rope_frequencies: expected " + std::to_string(model_.config().n_rot / 2) + " frequencies, got " +
                std::to_string(inv_freq.size()));
  rope_inv_freq_override_ = std::move(inv_freq);
}

std::span<const float> Engine::eval(std::span<const int32_t> tokens, bool all_logits) {
  const ModelConfig& c = model_.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw Error("eval: no tokens");
  if (n_past_ + n > n_ctx_)
    throw Error("context overflow: " + std::to_string(n_past_) + " cached + " + std::to_string(n) +
                " new tokens exceed the context of " + std::to_string(n_ctx_) + " tokens (raise -c/--ctx-size)");
  for (int32_t t : tokens)
    if (t < 0 || t >= c.n_vocab)
      throw Error("token id " + std::to_string(t) + " is out of range [0, " + std::to_string(c.n_vocab) + ")");

  logits_.resize(static_cast<size_t>(all_logits ? n : 1) * c.n_vocab);
  forward(tokens.data(), static_cast<int>(n), all_logits, logits_.data());
  return {logits_.data(), logits_.size()};
}

// Runs all n tokens through the model layer by layer: every chunk of n_batch tokens passes layer l
// before any passes layer l + 1. The result is the same as token-chunk order (causal attention
// only looks back), but a KV policy can compress layer l as soon as it holds the whole prompt.
void Engine::forward(const int32_t* tokens, int n, bool all_logits, float* logits_out) {
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  Workspace& ws = *ws_;
  cpu::ThreadPool& pool = ws.pool;
  const bool observe = observer_ != nullptr;
  const int chunk = std::min(n, n_batch_);
  ws.ensure(c, n, chunk, observe);
  for (auto& s : ws.scores)
    if (s.size() < static_cast<size_t>(n_ctx_) * c.n_group()) s.resize(static_cast<size_t>(n_ctx_) * c.n_group());

  const int E = c.n_embd, HD = c.head_dim, QD = c.n_head * HD, KD = c.n_head_kv * HD;
  float* x = ws.x.data();
  float* xn = ws.xn.data();

  // KV policy: the last query rows of a prefill, and the decode-time attention.
  const bool prefill_policy = policy_ != nullptr && n >= 2;
  const int tail_rows = prefill_policy ? std::min(n, policy_->prefill_query_rows()) : 0;
  if (tail_rows > 0) {
    ws.q_tail.resize(static_cast<size_t>(tail_rows) * QD);
    ws.q_pre_tail.resize(static_cast<size_t>(tail_rows) * QD);
  }
  const bool decode_hook = policy_ != nullptr && n == 1 && policy_->wants_decode_attention();
  if (decode_hook && ws.decode_probs.size() < static_cast<size_t>(c.n_head) * n_ctx_)
    ws.decode_probs.resize(static_cast<size_t>(c.n_head) * n_ctx_);

  // Embeddings: dequantize the token rows.
  const size_t embd_row = quant::row_bytes(w.token_embd.type, E);
  pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      quant::dequantize_row(w.token_embd.type, w.token_embd.data + embd_row * tokens[i], x + i * E, E);
    if (c.embd_scale != 1.0f)
      for (int64_t i = b; i < e; ++i) cpu::scale_inplace(x + i * E, E, c.embd_scale);
  });

  // RoPE angles depend only on the position: computed once per call, shared by all layers.
  cpu::RopeParams rope{c.n_rot, HD, c.rope_base, c.rope_freq_scale, w.rope_freqs, c.rope_layout == RopeLayout::Neox,
                       rope_inv_freq_override_.empty() ? nullptr : rope_inv_freq_override_.data()};
  for (int i = 0; i < n; ++i) cpu::rope_angles(rope, n_past_ + i, ws.cos_sin.data() + static_cast<size_t>(i) * c.n_rot);
  // Local (sliding-window) layers rotate with their own base and no scaling; an override applies to all.
  cpu::RopeParams rope_local = rope;
  rope_local.base = c.rope_base_local;
  rope_local.freq_scale = 1.0f;
  rope_local.freq_factors = nullptr;
  if (c.n_swa > 0)
    for (int i = 0; i < n; ++i)
      cpu::rope_angles(rope_local, n_past_ + i, ws.cos_sin_local.data() + static_cast<size_t>(i) * c.n_rot);

  const float kq_scale = c.softmax_scale();
  const int group = c.n_group();
  ws.kv_len0.resize(c.n_head_kv);

  for (int l = 0; l < c.n_layer; ++l) {
    if (skip_[l]) continue;
    const LayerWeights& L = w.layers[l];
    const bool obs_layer = observe && observer_->wants_layer(l);
    const int window = c.window(l);  // 0: global layer
    const float* layer_cos_sin = window > 0 ? ws.cos_sin_local.data() : ws.cos_sin.data();
    const cpu::RopeParams& layer_rope = window > 0 ? rope_local : rope;
    kv_->reserve_extra(l, n);  // per layer: earlier layers may already be compressed
    for (int h = 0; h < c.n_head_kv; ++h) ws.kv_len0[h] = kv_->length(l, h);

    for (int b = 0; b < n; b += chunk) {
      const int nb = std::min(chunk, n - b);
      float* xc = x + static_cast<int64_t>(b) * E;
      if (obs_layer) std::memcpy(ws.block_in.data(), xc, sizeof(float) * nb * E);

      // --- attention ---
      pool.parallel_for(nb, 1, [&](int64_t bb, int64_t e) {
        for (int64_t i = bb; i < e; ++i) cpu::rms_norm_row(xc + i * E, L.attn_norm, xn + i * E, E, c.rms_eps);
      });
      cpu::matmul(L.wq, xn, nb, E, ws.q.data(), QD, pool, ws.scratch);
      cpu::matmul(L.wk, xn, nb, E, ws.k.data(), KD, pool, ws.scratch);
      cpu::matmul(L.wv, xn, nb, E, ws.v.data(), KD, pool, ws.scratch);
      pool.parallel_for(nb, 1, [&](int64_t bb, int64_t e) {
        for (int64_t i = bb; i < e; ++i) {
          float* qi = ws.q.data() + i * QD;
          float* ki = ws.k.data() + i * KD;
          float* vi = ws.v.data() + i * KD;
          if (L.bq) for (int j = 0; j < QD; ++j) qi[j] += L.bq[j];
          if (L.bk) for (int j = 0; j < KD; ++j) ki[j] += L.bk[j];
          if (L.bv) for (int j = 0; j < KD; ++j) vi[j] += L.bv[j];
          if (L.q_norm) {
            // QK-norm (gemma3): each head normalised on its own, before RoPE. Observers and policies
            // see the normalised vectors as "pre-RoPE", since those are what RoPE rotates.
            for (int h = 0; h < c.n_head; ++h) cpu::rms_norm_row(qi + h * HD, L.q_norm, qi + h * HD, HD, c.rms_eps);
            for (int h = 0; h < c.n_head_kv; ++h) cpu::rms_norm_row(ki + h * HD, L.k_norm, ki + h * HD, HD, c.rms_eps);
          }
          if (obs_layer) {
            std::memcpy(ws.q_pre.data() + i * QD, qi, sizeof(float) * QD);
            std::memcpy(ws.k_pre.data() + i * KD, ki, sizeof(float) * KD);
          }
          const int64_t gi = b + i;  // index in the call
          if (gi >= n - tail_rows)
            std::memcpy(ws.q_pre_tail.data() + (gi - (n - tail_rows)) * QD, qi, sizeof(float) * QD);
          const float* cs = layer_cos_sin + gi * c.n_rot;
          cpu::rope_apply(layer_rope, cs, qi, c.n_head);
          cpu::rope_apply(layer_rope, cs, ki, c.n_head_kv);
          if (gi >= n - tail_rows)
            std::memcpy(ws.q_tail.data() + (gi - (n - tail_rows)) * QD, qi, sizeof(float) * QD);
        }
      });
      if (obs_layer) {
        LayerQk qk{l, n_past_ + b, nb, c.n_head, c.n_head_kv, HD, ws.q_pre.data(), ws.k_pre.data(), ws.q.data(), ws.k.data()};
        observer_->on_qk(qk);
      }
      for (int h = 0; h < c.n_head_kv; ++h) kv_->append(l, h, ws.k.data() + h * HD, ws.v.data() + h * HD, nb, KD);

      // Each (token, head) pair attends to its KV head's cached rows up to and including itself.
      // Costs grow with the token's position, so threads take small chunks from a shared counter
      // instead of fixed halves (a fixed split leaves the thread with the short rows idle).
      std::atomic<int64_t> next_task{0};
      // A task is one token and one KV head with its group of query heads: each cached key and
      // value row is then read once per group instead of once per query head (GQA), which is
      // what long-context decoding is bound by.
      const int64_t tasks = static_cast<int64_t>(nb) * c.n_head_kv;
      const int64_t grab = std::max<int64_t>(1, tasks / (16 * pool.size()));
      auto attend = [&](int t) {
        float* scores = ws.scores[t].data();  // [group][n_ctx]
        cpu::AttentionRow rows[kMaxGroup];
        float* probs[kMaxGroup];
        float* outs[kMaxGroup];
        for (;;) {
          const int64_t begin = next_task.fetch_add(grab, std::memory_order_relaxed);
          if (begin >= tasks) break;
          const int64_t end = std::min(tasks, begin + grab);
          for (int64_t task = begin; task < end; ++task) {
            const int i = static_cast<int>(task / c.n_head_kv), kvh = static_cast<int>(task % c.n_head_kv);
            const int n_vis = ws.kv_len0[kvh] + b + i + 1;
            for (int g = 0; g < group; ++g) {
              const int h = kvh * group + g;
              cpu::AttentionRow& row = rows[g];
              row.q = ws.q.data() + static_cast<int64_t>(i) * QD + h * HD;
              row.K = kv_->keys(l, kvh);
              row.V = kv_->values(l, kvh);
              // A local layer sees the last `window` cached rows (the keys p - window + 1 .. p when
              // nothing was evicted; with a compressed cache, the newest `window` rows kept).
              row.first = window > 0 ? std::max(0, n_vis - window) : 0;
              row.n_vis = n_vis;
              row.head_dim = HD;
              row.scale = kq_scale;
              row.single_token = nb == 1;  // llama.cpp: a one-token ubatch takes the vec_dot path
              probs[g] = scores + static_cast<size_t>(g) * n_ctx_;
              outs[g] = ws.attn.data() + static_cast<int64_t>(i) * QD + h * HD;
            }
            cpu::attention_rows(rows, group, probs, outs);
            const int64_t pos = n_past_ + b + i;
            for (int g = 0; g < group; ++g) {
              const int h = kvh * group + g;
              if (obs_layer && observer_->wants_attention_row(l, h, pos)) observer_->on_attention_row(l, h, pos, probs[g], n_vis);
              if (decode_hook) std::memcpy(ws.decode_probs.data() + static_cast<size_t>(h) * n_ctx_, probs[g], sizeof(float) * n_vis);
            }
          }
        }
      };
      pool.run_each(attend);
      if (decode_hook) {
        std::vector<const float*>& probs = decode_prob_ptrs_;
        probs.resize(c.n_head);
        for (int h = 0; h < c.n_head; ++h) probs[h] = ws.decode_probs.data() + static_cast<size_t>(h) * n_ctx_;
        policy_->on_decode_layer(l, probs, *kv_);
      }
      cpu::matmul(L.wo, ws.attn.data(), nb, QD, xn, E, pool, ws.scratch);
      if (L.post_attn_norm) {
        pool.parallel_for(nb, 1, [&](int64_t bb, int64_t e) {
          for (int64_t i = bb; i < e; ++i) cpu::rms_norm_row(xn + i * E, L.post_attn_norm, xn + i * E, E, c.rms_eps);
        });
      }
      pool.parallel_for(static_cast<int64_t>(nb) * E, 1024, [&](int64_t bb, int64_t e) {
        for (int64_t j = bb; j < e; ++j) xc[j] += xn[j];
      });

      // --- feed-forward ---
      pool.parallel_for(nb, 1, [&](int64_t bb, int64_t e) {
        for (int64_t i = bb; i < e; ++i) cpu::rms_norm_row(xc + i * E, L.ffn_norm, xn + i * E, E, c.rms_eps);
      });
      cpu::matmul(L.w_gate, xn, nb, E, ws.gate.data(), c.n_ff, pool, ws.scratch);
      cpu::matmul(L.w_up, xn, nb, E, ws.up.data(), c.n_ff, pool, ws.scratch);
      pool.parallel_for(static_cast<int64_t>(nb) * c.n_ff, 1024, [&](int64_t bb, int64_t e) {
        if (c.ffn_act == FfnActivation::GeluTanh)
          cpu::geglu_tanh(ws.gate.data() + bb, ws.up.data() + bb, ws.gate.data() + bb, e - bb);
        else
          cpu::silu_mul(ws.gate.data() + bb, ws.up.data() + bb, ws.gate.data() + bb, e - bb);
      });
      cpu::matmul(L.w_down, ws.gate.data(), nb, c.n_ff, xn, E, pool, ws.scratch);
      if (L.post_ffn_norm) {
        pool.parallel_for(nb, 1, [&](int64_t bb, int64_t e) {
          for (int64_t i = bb; i < e; ++i) cpu::rms_norm_row(xn + i * E, L.post_ffn_norm, xn + i * E, E, c.rms_eps);
        });
      }
      pool.parallel_for(static_cast<int64_t>(nb) * E, 1024, [&](int64_t bb, int64_t e) {
        for (int64_t j = bb; j < e; ++j) xc[j] += xn[j];
      });
      if (obs_layer) observer_->on_block(l, ws.block_in.data(), xc, nb, E);
    }
    if (prefill_policy) {
      PrefillLayerView view{l, n_past_, n, tail_rows, c.n_head, c.n_head_kv, HD, ws.q_tail.data(), ws.q_pre_tail.data()};
      policy_->on_prefill_layer(view, *kv_);
    }
    // With a KV policy attached (compression), a local layer keeps only what its next query can see:
    // the last window - 1 rows (the query's own row makes the window). Rows before that are invisible
    // to every later query, so dropping them changes no result. Without a policy the cache keeps all
    // rows, so that observers can index attention rows by position.
    if (policy_ != nullptr && window > 0) {
      for (int h = 0; h < c.n_head_kv; ++h) {
        const int len = kv_->length(l, h), keep = window - 1;
        if (len <= keep) continue;
        window_rows_.resize(keep);
        for (int j = 0; j < keep; ++j) window_rows_[j] = len - keep + j;
        kv_->keep_rows(l, h, window_rows_);
        if (n > 1) kv_->shrink_to_fit(l, h);  // keep_rows keeps capacity; give a prompt's rows back
      }
    }
  }
  if (prefill_policy) policy_->on_prefill_done(*kv_);
  n_past_ += n;

  // Final norm and output head, for every token or only the last, chunk by chunk.
  const bool obs_final = observe && observer_->wants_layer(c.n_layer);
  const int first = (all_logits || obs_final) ? 0 : n - 1;
  for (int b = first; b < n; b += chunk) {
    const int nb = std::min(chunk, n - b);
    float* xc = x + static_cast<int64_t>(b) * E;
    pool.parallel_for(nb, 1, [&](int64_t bb, int64_t e) {
      for (int64_t i = bb; i < e; ++i) cpu::rms_norm_row(xc + i * E, w.output_norm, xn + i * E, E, c.rms_eps);
    });
    if (obs_final) observer_->on_block(c.n_layer, xc, xn, nb, E);
    if (all_logits) {
      cpu::matmul(w.output, xn, nb, E, logits_out + static_cast<size_t>(b) * c.n_vocab, c.n_vocab, pool, ws.scratch);
    } else if (b + nb == n) {
      cpu::matmul(w.output, xn + static_cast<int64_t>(nb - 1) * E, 1, E, logits_out, c.n_vocab, pool, ws.scratch);
    }
  }
  if (c.final_logit_softcap > 0) {
    const int64_t count = static_cast<int64_t>(all_logits ? n : 1) * c.n_vocab;
    pool.parallel_for(count, 4096, [&](int64_t bb, int64_t e) { cpu::softcap_inplace(logits_out + bb, e - bb, c.final_logit_softcap); });
  }
}

}  // namespace tappa
