// Launchers of the backend's kernels (ops.cu, gemv.cu, attention.cu). Every launcher queues work on
// `s` and returns; matrices are row-major with a leading dimension in elements.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/cuda/common.cuh"

namespace tappa::cuda {

// --- ops.cu ---------------------------------------------------------------------------------------
// table: bf16 or (f16) fp16 rows.
void embed(const void* table, bool f16, const int32_t* tokens, int n, int64_t cols, float scale, float* x, int64_t ldx,
           cudaStream_t s);
void rms_norm(const float* x, int64_t ldx, const float* w, float eps, float* out, int64_t ldo, int64_t rows,
              int64_t cols, cudaStream_t s);
enum class Elementwise { AddBias, Add, Scale, Softcap };
// y = f(y, x): AddBias (x = vector [cols]), Add (x matrix), Scale (a), Softcap (a = cap).
void elementwise(Elementwise op, float* y, int64_t ldy, const float* x, int64_t ldx, float a, int64_t rows,
                 int64_t cols, cudaStream_t s);
// gate = act(gate) * up; gelu: the tanh approximation.
void glu(float* gate, int64_t ldg, const float* up, int64_t ldu, bool gelu, int64_t rows, int64_t cols, cudaStream_t s);
// Rotates pairs of the first n_rot dims of every head of row i with table row i ((cos, sin) per
// pair), of x (n_heads heads) and of x2 (n_heads2 heads; 0 for none) in one launch.
void rope(const float* table, int64_t ldt, float* x, int64_t ldx, int64_t rows, int n_heads, float* x2, int64_t ldx2,
          int n_heads2, int head_dim, int n_rot, bool neox, cudaStream_t s);
void to_bf16(const float* x, int64_t ldx, bf16* y, int64_t ldy, int64_t rows, int64_t cols, cudaStream_t s);
// Element i of a random-weight matrix (model/random_weights.h).
void random_fill(bf16* dst, int64_t n, uint64_t seed, float step, cudaStream_t s);
// ids[i] = first index of row i's maximum.
void argmax_rows(const float* x, int64_t ldx, int64_t rows, int64_t cols, int32_t* ids, cudaStream_t s);

void to_f16(const float* x, int64_t ldx, f16* y, int64_t ldy, int64_t rows, int64_t cols, cudaStream_t s);

// K/V rows of one (sequence, KV head) list: rows of k / v (fp32, the head's columns) appended at
// the list's end. dk / dv are the list's first key / value row; the row the append starts at (the
// list's length) is not an argument but device memory (rope_append's lens), so that a replayed
// launch appends where the list ends at replay time.
struct AppendEntry {
  const float* k;
  const float* v;
  int64_t ldk, ldv;
  kv_t* dk;
  kv_t* dv;
  int rows;
  int row;  // with RoPE: k's first row is row `row` of the rotated rows (of the table)
};
// The RoPE of one step's queries and keys, fused into the appends of its keys (rope = true: every
// key row is rotated by exactly one entry, the caller checks), or none (rope = false: plain appends).
struct RopeAppend {
  bool rope = false;
  const float* table = nullptr;
  int64_t ldt = 0;
  float* q = nullptr;  // q_rows rows of n_head heads (nullptr: no queries)
  int64_t ldq = 0;
  int64_t q_rows = 0;
  int n_head = 0;
  int head_dim = 0, n_rot = 0;
  bool neox = false;
};
constexpr int kAppendEntriesSmall = 32;  // a small argument block launches faster
constexpr int kAppendEntriesMax = 512;   // the argument block stays under CUDA's 32 KB of parameters
template <int MAXE>
struct RopeAppendT {
  const float* table;
  int64_t ldt;
  float* q;
  int64_t ldq;
  int n_head, head_dim, n_rot;
  bool neox, rope;
  int qy, q_blocks;
  const int* lens;
  int n_entries, max_rows;
  AppendEntry e[MAXE];
};
// lens_host[i]: entry i's list length before the append.
void rope_append(const RopeAppend& r, const AppendEntry* e, const int* lens_host, int n, cudaStream_t s);
// dst = src, rows x cols floats.
void copy_rows(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols, cudaStream_t s);
// dst row i = src row rows[i] of one list's keys or values, n rows.
void gather_rows(const kv_t* src, kv_t* dst, const int32_t* rows, int n, int head_dim, cudaStream_t s);

// --- gemv.cu --------------------------------------------------------------------------------------
// y = x · Wᵀ for few rows of x (m <= kGemvMaxRows) straight from 16-bit weights in fp32, each output
// summed in one fixed order whatever m is (so a row's result does not depend on the batch). More
// rows re-read the activations from L2 per warp faster than the weights stream, so larger batches
// go to cuBLAS.
constexpr int kGemvMaxRows = 4;
enum class GemvMode { Store, Accumulate, GluSilu, GluGelu };
// Weights are bf16 (bf16 files, random-weight models) or fp16 (every other format, dequantized).
struct GemvSeg {
  const void* w = nullptr;
  const void* w2 = nullptr;  // GLU: the up projection (w is the gate)
  float* y = nullptr;
  int64_t ldy = 0;
  int n = 0;  // output features (rows of w)
};
// An RMSNorm fused into the products (Store and GLU modes): x is the norm's input, w its weights
// (k floats); out (if set) receives the normalized rows, as rms_norm would write them.
struct GemvNorm {
  const float* w = nullptr;
  float eps = 0.0f;
  float* out = nullptr;
  int64_t ldo = 0;
};
// Up to 3 products of the same x in one launch (Q, K, V).
void gemv(const GemvSeg* segs, int n_seg, GemvMode mode, bool f16_weights, const float* x, int64_t ldx, int m, int k,
          cudaStream_t s, const GemvNorm* norm = nullptr);
bool gemv_fits(const float* x, int64_t ldx, int k);  // alignment the kernel's 16-byte loads need

// --- attention.cu ---------------------------------------------------------------------------------
// One (sequence, KV head) list: its keys and values ([len][head_dim] bf16 each), the sequence's
// n_rows query rows at rows row0.. of q / out (the last n_rows rows of the list are theirs).
struct AttnList {
  const kv_t* k = nullptr;
  const kv_t* v = nullptr;
  int len = 0;
  int n_rows = 0;
  int row0 = 0;
  int kv_head = 0;
  int cap = 0;  // rows the list has room for (attention_rows sizes its grid by it; 0: len)
};
struct AttnShape {
  int group = 1;       // query heads per KV head
  int head_dim = 0;
  float scale = 1.0f;  // of q·k
  int window = 0;      // > 0: the newest `window` visible rows only
};
// Lists of any lengths, few query rows each (decoding, short chunks): split over the keys
// (flash-decoding) with fp32 queries, one warp per query head. Any head_dim <= 256 multiple of 32.
struct DecodeScratch {
  Scratch part;
  Scratch cnt;  // per (list, row): chunks done, for the combine fused into the chunk kernel (kept 0 at rest)
  std::vector<int> lens;
};
// prefetch: the first prefetch_bytes of it are asked into the L2 cache by the chunk kernel's blocks
// as they start (a hint: the weights of the product that follows, while the attention leaves the
// memory bandwidth mostly idle; nullptr: none). Results do not depend on it.
void attention_rows(const AttnList* lists, int n_lists, const AttnShape& sh, const float* q, int64_t ldq, float* out,
                    int64_t ldo, int n_sm, DecodeScratch& scratch, Context& ctx, const void* prefetch = nullptr,
                    size_t prefetch_bytes = 0);
// One sequence's many rows (prefill): tensor-core flash attention, causal, no K/V repeated for
// grouped queries. head_dim 64 or 128; q given as fp16 [rows][n_head*head_dim] from the sequence's
// first row.
bool flash_supported(int head_dim);
void attention_flash(const AttnList* lists, int n_head_kv, const AttnShape& sh, const f16* q, int64_t ldq, float* out,
                     int64_t ldo, cudaStream_t s);
// probs[t][0..n_vis) of one (list, row, query head of the group) per triple (zeros before the
// window): the softmax rows the taps receive. probs rows are `ld` floats apart.
struct ProbTriple {
  int list, row, g;
};
void attention_probs(const AttnList* lists, const ProbTriple* triples, int n, const AttnShape& sh, const float* q,
                     int64_t ldq, float* probs, int64_t ld, Context& ctx, Scratch& tmp);

}  // namespace tappa::cuda
