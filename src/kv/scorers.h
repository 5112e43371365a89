// Token scorers of KV-cache compression: pure arithmetic on plain arrays, no engine state.
//
// Vocabulary (docs/KV_COMPRESSION.md has the formulas and where we differ from the released code):
//   N      prompt length (keys 0 … N−1 of one layer, per KV head)
//   W      protected recent window (the last W prompt tokens are always kept; default 32)
//   P      = N − W, the prefix: the keys a scorer ranks. Every scorer writes scores[H_kv][P]
//          (row-major, KV head kv at out[kv*P + j]); higher = keep.
//   H, H_kv, G = H / H_kv   query heads, KV heads, query heads per KV head (GQA). Query head
//          h = kv·G + g reads KV head kv (llama.cpp / Hugging Face repeat_kv order). Scores are
//          computed per query head and averaged over each KV head's group, so one decision is made
//          per KV head (the cache stores KV heads: that is where memory is saved).
//
// Numerics: inputs fp32; logits and softmax in fp32 with a double normaliser; every sum over rows
// or keys is accumulated in double; outputs fp32. The official code works in fp16/bf16, so agreement
// with it is to that precision (rankings can differ on near-ties).
//
// Threading: every function is re-entrant (no global state); different layers / KV heads can be
// scored from different threads. Functions that need scratch memory allocate it once per call
// (O(N) floats) unless noted.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

namespace tappa::kv {

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------

// Rows of several heads: row r of head h starts at head(h) + r*row_stride and holds `dim` floats.
// Covers the three layouts the engine has: head-major [H][rows][dim], token-major [rows][H*dim]
// (the observer's LayerQk buffers) and one pointer per head (KvCache::keys(layer, head)).
struct HeadsView {
  const float* data = nullptr;          // head h at data + h*head_stride (when `heads` is null)
  std::ptrdiff_t head_stride = 0;
  const float* const* heads = nullptr;  // optional: explicit base pointer per head
  int n_heads = 0;
  int n_rows = 0;
  int dim = 0;
  std::ptrdiff_t row_stride = 0;  // floats between consecutive rows of one head
  int row0 = 0;                   // row offset applied to every head (set by rows())

  // Base of head h (row 0 of the view).
  const float* head(int h) const {
    return (heads ? heads[h] : data + h * head_stride) + static_cast<std::ptrdiff_t>(row0) * row_stride;
  }
  const float* row(int h, int r) const { return head(h) + r * row_stride; }
  bool empty() const { return n_heads == 0 || n_rows == 0; }
  // Rows [first, first + count) of every head (same heads). Throws tappa::Error if out of range.
  HeadsView rows(int first, int count) const;
  // The last `count` rows.
  HeadsView last_rows(int count) const { return rows(n_rows - count, count); }

  // [n_heads][n_rows][dim], contiguous.
  static HeadsView head_major(const float* data, int n_heads, int n_rows, int dim);
  // [n_rows][n_heads*dim], contiguous (observer LayerQk buffers, batched activations).
  static HeadsView token_major(const float* data, int n_rows, int n_heads, int dim);
  // One base pointer per head, rows `dim` floats apart (KvCache lists). `heads` must outlive the view.
  static HeadsView per_head(const float* const* heads, int n_heads, int n_rows, int dim);
};

// Softmax attention probabilities, contiguous [n_head][n_rows][n_keys] (what window_attention
// writes): query head h, row a, key j at data[(h*n_rows + a)*n_keys + j].
struct AttentionView {
  const float* data = nullptr;
  int n_head = 0;
  int n_rows = 0;
  int n_keys = 0;
  const float* row(int h, int a) const {
    return data + (static_cast<std::ptrdiff_t>(h) * n_rows + a) * n_keys;
  }
};

// ---------------------------------------------------------------------------------------------
// Window attention
// ---------------------------------------------------------------------------------------------

// A = softmax(Q Kᵀ/√d) for the R query rows of `q` (the last R prompt positions N−R … N−1, all H
// query heads, post-RoPE) against the N keys of `k` (post-RoPE, H_kv KV heads; query head h reads
// KV head h / (H/H_kv)). Row a sits at position N−R+a.
// Mask: only inside the causal_block × causal_block bottom-right corner (rows a ≥ R−M, keys
// j ≥ N−M, masked when j−(N−M) > a−(R−M)); rows above the corner see all N keys. causal_block = −1
// (default) means M = R: exact causal attention. M = W < R reproduces the official H2O quirk
// (PAPER.md §3.5). For R = W both are the official observation-window attention (§3.1 step 2).
// Softmax in fp32 (double normaliser); masked entries are exactly 0.
// out: [H][R][N] floats, caller-provided (out.size() == H*R*N). Throws tappa::Error on bad shapes
// (R > N, H % H_kv ≠ 0, dims differ, wrong out size, M > R).
void window_attention(const HeadsView& q, const HeadsView& k, std::span<float> out, int causal_block = -1);

// Same for the G query heads of one KV head only (q rows of heads kv·G … kv·G+G−1): out [G][R][N].
// Lets a caller score one group at a time with G·R·N floats of scratch instead of H·R·N.
void window_attention_group(const HeadsView& q, const HeadsView& k, int kv, std::span<float> out,
                            int causal_block = -1);

// ---------------------------------------------------------------------------------------------
// Pooling along keys (1-D, stride 1, "same" length)
// ---------------------------------------------------------------------------------------------

enum class Pooling {
  none,
  avg,  // zero padding of k/2 on both sides, divisor always k (torch avg_pool1d count_include_pad)
  max,  // padding ignored (torch max_pool1d pads with −inf)
};
struct PoolOptions {
  Pooling kind = Pooling::avg;
  int kernel = 5;  // odd, ≥ 1; padding = kernel/2
};
// out[j] = pool(in)[j] for j < n. in and out must not overlap. Throws tappa::Error for an even or
// non-positive kernel.
void pool1d(const float* in, int n, const PoolOptions& pool, float* out);

// ---------------------------------------------------------------------------------------------
// Attention-based scorers. `a` holds R ≥ 1 rows per query head over N = a.n_keys keys; scores are
// written for keys 0 … n_prefix−1 (n_prefix ≤ N), per KV head, after pooling per query head and
// averaging over the group. out.size() must be n_head_kv * n_prefix.
// Pass an AttentionView of one group (a.n_head = G) with n_head_kv = 1 to score one KV head.
// ---------------------------------------------------------------------------------------------

// SnapKV: s = Σ_a A[a, j] over the rows (PAPER.md §3.5; KVCache-Factory sums, kvpress averages —
// the same ranking; `mean_rows` switches), then pooling (default avg k=5; the TAPPA harness runs
// the baselines with max k=7), then the group mean.
void snapkv_scores(const AttentionView& a, int n_head_kv, int n_prefix, const PoolOptions& pool,
                   std::span<float> out, bool mean_rows = false);

// CAKE eviction indicator (also TAPPA's token score): s = mean_a A + γ·Var_a A (unbiased; 0 when
// R = 1), avg-pool k=5 p=2 count_include_pad by default, group mean (PAPER.md §3.1 step 4). γ = 200.
void cake_scores(const AttentionView& a, int n_head_kv, int n_prefix, double gamma, const PoolOptions& pool,
                 std::span<float> out);

// H2O from materialised attention rows: s = Σ_a A[a, j] over all R rows (no pooling), group mean.
// For the official prefill variant the rows are the last min(512, N) queries (window_attention
// with R = 512; causal_block = W reproduces the quirk, −1 the proper causal mask).
void h2o_scores(const AttentionView& a, int n_head_kv, int n_prefix, std::span<float> out);

// The same without materialising R×N rows: attention rows of the R query rows of `q` are computed
// one at a time into an N-float scratch buffer and summed. Same mask semantics as window_attention.
// This is what the engine should call for the official 512-row variant.
void h2o_scores_streaming(const HeadsView& q, const HeadsView& k, int n_prefix, std::span<float> out,
                          int causal_block = -1);

// True H2O: attention received by each key summed over every causal prompt query, accumulated by
// the caller during prefill: acc[h*acc_stride + j] for query head h and key j < n_prefix (keys
// beyond a query's position contribute 0 by causality). Group mean, no pooling.
void h2o_scores_from_accumulated(const float* acc, int n_head, int n_head_kv, std::ptrdiff_t acc_stride,
                                 int n_prefix, std::span<float> out);

// ---------------------------------------------------------------------------------------------
// Attention-free scorers
// ---------------------------------------------------------------------------------------------

// StreamingLLM. keep_first = false (default, the StreamingLLM method and kvpress): the n_sink first
// tokens score highest (P + n_sink − j), the others by recency (j), so top-b keeps the sinks and
// the b − n_sink most recent prefix tokens; with the protected window that is sinks + a recent
// window. keep_first = true reproduces KVCache-Factory/TAPPA's baseline, which keeps the first
// C − W tokens (score P − j). Same scores for every KV head.
void streamingllm_scores(int n_head_kv, int n_prefix, int n_sink, std::span<float> out, bool keep_first = false);

// kvpress KnormPress: s = −‖k_j‖₂ (low key norm = important). keys: H_kv heads, ≥ n_prefix rows.
void knorm_scores(const HeadsView& keys, int n_prefix, std::span<float> out);

// Uniform [0, 1) scores from a counter-based hash of (seed, layer, kv head, j): reproducible and
// independent of call order / threading.
void random_scores(uint64_t seed, int layer, int n_head_kv, int n_prefix, std::span<float> out);

// ---------------------------------------------------------------------------------------------
// Expected Attention (kvpress ExpectedAttentionPress, arXiv 2510.00636)
// ---------------------------------------------------------------------------------------------

// How the engine rotates queries and keys: channel pair i of a head, (2i, 2i+1) (llama layout) or
// (i, i + n_rot/2) (neox, qwen2), is rotated by the angle pos·inv_freq[i]; dims ≥ n_rot are not
// rotated. Model::rope_inv_freq() gives inv_freq (Llama-3 factors and scaling included).
struct RopeSpec {
  std::span<const float> inv_freq;  // [n_rot/2]
  int n_rot = 0;                    // 0: no RoPE
  bool neox = false;
};

struct ExpectedAttentionOptions {
  int n_future = 512;          // future positions the rotation is averaged over (kvpress default)
  int n_sink = 4;              // first keys never evicted (score = max) and first query rows dropped
  bool use_covariance = true;  // add kᵀΣk/(2d)
  bool use_vnorm = true;       // multiply by ‖v‖
  double epsilon = 0.0;        // (s + ε)·‖v‖ (kvpress default 0; its ablation liked 1e-4)
  bool queries_post_rope = false;  // true: query rows are post-RoPE and are de-rotated exactly first
  int64_t query_pos0 = 0;      // absolute position of query row 0 (sink rows: position < n_sink)
  int64_t future_pos0 = -1;    // first future position; −1: N (= keys.n_rows)
};

// Per query head: μ = mean and Σ = (1/R)·Σ(q−μ)(q−μ)ᵀ of the (pre-RoPE) query rows at positions
// ≥ n_sink; R̄ = mean over p ∈ [future_pos0, future_pos0 + n_future) of the RoPE rotation R_p;
// μ' = R̄μ, Σ' = R̄ΣR̄ᵀ; logit_j = μ'ᵀk_j/√d + k_jᵀΣ'k_j/(2d) over keys j ≥ n_sink (post-RoPE, all
// N of them); softmax over those keys; group mean; (s + ε)·‖v_j‖. Sink keys j < n_sink get the
// maximum score of the layer. Written for j < n_prefix.
// q: H heads, any number of rows (the whole prompt as kvpress does, or the window); keys, values:
// H_kv heads, N rows. Cost O(H·N·d²) with the covariance term, O(H·N·d) without.
void expected_attention_scores(const HeadsView& q, const HeadsView& keys, const HeadsView& values,
                               const RopeSpec& rope, int n_prefix, const ExpectedAttentionOptions& opt,
                               std::span<float> out);

// The averaged rotation as it is applied: (c̄_i, s̄_i) = mean_p (cos pθ_i, sin pθ_i), interleaved
// [n_rot/2][2]. Exposed for tests.
void average_rotation(const RopeSpec& rope, int64_t pos0, int n_future, double* cs_out);

}  // namespace tappa::kv
