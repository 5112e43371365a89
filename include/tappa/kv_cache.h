// A sequence's KV cache: for every (layer, KV head) its own list of cached keys and values, keys
// stored after RoPE. Each list has its own length, so that compression can keep a different number
// of tokens per layer and per head; attention reads each list as it is. Memory grows on demand
// (geometrically, outside the per-token path) and can be given back (shrink_to_fit), so bytes_held()
// is memory really held, not a mask over a full-size buffer. After query-head KV compression
// (repeat_lists) a cache holds one list per query head instead: n_head_kv() then says n_head.
//
// The backend that runs the model makes the cache (Engine::new_sequence) and decides where it lives;
// keys() / values() give fp32 host rows where the storage allows (the CPU and reference backends), and
// read() copies rows out of any storage.
//
// Storage formats (KvCacheFormat): K and V each f32, f16, bf16, q8_0 or q4_0 (llama.cpp's -ctk / -ctv;
// q8_0 / q4_0 are ggml's 32-element blocks along head_dim, so one row is head_dim / 32 self-contained
// blocks), optionally Walsh-Hadamard rotated before rounding (docs/KV_FORMATS.md). read() always
// returns the values as fp32 in the model's own basis (rotation undone).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tappa {

// Element type of a cache's K or V rows.
enum class KvType : uint8_t { f32, f16, bf16, q8_0, q4_0 };
// "f32", "f16", "bf16", "q8_0", "q4_0" (llama.cpp's names).
const char* kv_type_name(KvType t);
// The type of a name above (nullopt otherwise).
std::optional<KvType> parse_kv_type(std::string_view name);
// Bytes of one row of head_dim elements (q8_0: head_dim / 32 * 34, q4_0: head_dim / 32 * 18).
size_t kv_row_bytes(KvType t, int head_dim);
// Whether head_dim can be stored as t (the block types need a multiple of 32).
bool kv_type_fits(KvType t, int head_dim);
inline bool kv_type_is_quantized(KvType t) { return t == KvType::q8_0 || t == KvType::q4_0; }

// How a cache stores its rows. rotate_k / rotate_v: each row is multiplied by an orthonormal
// Walsh-Hadamard matrix before it is rounded (K: one block of the largest power of two dividing
// head_dim; V: blocks of 64), which spreads outlier channels over the block before the shared
// block scale is chosen; attention rotates the query the same way (q·k is unchanged) and rotates the
// weighted V sum back.
struct KvCacheFormat {
  KvType k = KvType::f32;
  KvType v = KvType::f32;
  bool rotate_k = false;
  bool rotate_v = false;
  bool is_f32() const { return k == KvType::f32 && v == KvType::f32 && !rotate_k && !rotate_v; }
  bool operator==(const KvCacheFormat&) const = default;
};
// "q8_0/f16" (K/V), "+rot" when rotated: e.g. "q4_0+rotk/q4_0+rotv".
std::string kv_format_name(const KvCacheFormat& f);

// What a caller asks for: the types and whether to rotate. Automatic rotates a quantized K and a
// quantized V when head_dim is a multiple of 64, as llama.cpp does since its PR #21038.
enum class KvRotation : uint8_t { automatic, on, off };
struct KvCacheType {
  KvType k = KvType::f32;
  KvType v = KvType::f32;
  KvRotation rotation = KvRotation::automatic;
  bool operator==(const KvCacheType&) const = default;
};
// The format a cache of this head_dim gets. Throws tappa::Error (one line) when a type does not fit
// head_dim or rotation is asked for where it cannot apply (head_dim not a multiple of 64).
KvCacheFormat resolve_kv_format(const KvCacheType& t, int head_dim);

class KvCache {
 public:
  KvCache(int n_layer, int n_head_kv, int head_dim) : n_layer_(n_layer), n_head_kv_(n_head_kv), head_dim_(head_dim) {}
  virtual ~KvCache() = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  int n_layer() const { return n_layer_; }
  int n_head_kv() const { return n_head_kv_; }
  int head_dim() const { return head_dim_; }

  virtual int length(int layer, int head) const = 0;
  // Rows [0, length) of one list, row-major [length][head_dim] fp32, or nullptr when the storage is
  // not host fp32 (then use read()).
  virtual const float* keys(int layer, int head) const = 0;
  virtual const float* values(int layer, int head) const = 0;
  // Copies rows [first, first + n) of one list to k and v ([n][head_dim] each; either may be null).
  virtual void read(int layer, int head, int first, int n, float* k, float* v) const = 0;

  // Softmax attention of query rows against one list, computed where the list lives (a GPU): q is
  // host memory [n_group][n_rows][head_dim] (post-RoPE; n_group query heads sharing the list), and
  // row a of each group sits at the list's position length - n_rows + a: it sees list rows
  // 0 .. length - n_rows + a (causal at the bottom right). Writes probs [n_group][n_rows][length]
  // (host, zeros where masked). Returns false when the cache has no such kernel (host caches: the
  // caller computes it from keys()).
  virtual bool attention_rows(int layer, int head, const float* q, int n_group, int n_rows, float scale,
                              float* probs) const {
    return false;
  }

  // Makes room for `extra` more rows in every list of one layer (may allocate; the engine calls it
  // before a layer appends, so a policy that compresses finished layers keeps the peak at the
  // compressed layers plus one).
  virtual void reserve_extra(int layer, int extra) = 0;
  void reserve_extra(int extra) {
    for (int l = 0; l < n_layer_; ++l) reserve_extra(l, extra);
  }
  // Appends n host rows to one list (k and v: head_dim floats per row, `stride` floats apart).
  virtual void append(int layer, int head, const float* k, const float* v, int n, int64_t stride) = 0;
  // Appends rows [first, first + n) of a list of another cache of the same head size (any storage):
  // by default as stored where both caches store the same format (no re-rounding), else through fp32
  // host rows; device to device where both caches live on one GPU.
  virtual void append_from(int layer, int head, const KvCache& src, int src_layer, int src_head, int first, int n) {
    const KvCacheFormat f = format();
    if (!f.is_f32() && f == src.format()) {
      std::vector<uint8_t> k(static_cast<size_t>(n) * kv_row_bytes(f.k, head_dim_)), v(static_cast<size_t>(n) * kv_row_bytes(f.v, head_dim_));
      src.read_stored(src_layer, src_head, first, n, k.data(), v.data());
      append_stored(layer, head, k.data(), v.data(), n);
      return;
    }
    std::vector<float> k(static_cast<size_t>(n) * head_dim_), v(k.size());
    src.read(src_layer, src_head, first, n, k.data(), v.data());
    append(layer, head, k.data(), v.data(), n, head_dim_);
  }
  // Keeps only the listed rows (no repeats) of one list, in the given order, compacted in place: the
  // capacity stays, so per-step decode eviction followed by the next step's reservation allocates
  // nothing. Call shrink_to_fit(layer, head) afterwards to give the freed rows back.
  virtual void keep_rows(int layer, int head, std::span<const int> rows) = 0;
  // Keeps the first n rows (truncation) or the last n rows (a sliding window) of one list.
  virtual void keep_first(int layer, int head, int n) = 0;
  virtual void keep_last(int layer, int head, int n) = 0;
  virtual void shrink_to_fit(int layer, int head) = 0;
  virtual void shrink_to_fit() {
    for (int l = 0; l < n_layer_; ++l)
      for (int h = 0; h < n_head_kv_; ++h) shrink_to_fit(l, h);
  }
  virtual void clear() = 0;  // every list empty (capacity kept)
  // repeat_kv: every list becomes `factor` consecutive copies of itself (list h -> lists h*factor ..
  // h*factor + factor - 1), so n_head_kv() grows by that factor. Query-head granularity of KV
  // compression (one keep-set per query head, as the TAPPA harness) calls it with the GQA group size
  // before it compacts each copy to its own query head's rows; the engine then appends every new
  // K/V row to each copy and runs attention with one query head per list. The copies are real
  // memory and bytes_held() counts them. Default: throws tappa::Error (a storage that cannot).
  virtual void repeat_lists(int factor);
  // An independent copy of the contents (same storage kind).
  virtual std::unique_ptr<KvCache> clone() const = 0;

  virtual size_t bytes_held() const = 0;  // capacity actually allocated
  virtual size_t bytes_used() const = 0;  // rows held × their storage size, summed
  // Bytes of one row of K plus one row of V in this storage (fp32: head_dim * 8).
  virtual size_t row_bytes() const = 0;

  // --- the storage as stored (formats other than fp32; save/restore, cache-to-cache copies) ---
  virtual KvCacheFormat format() const { return {}; }
  // Rows [first, first + n) of one list in the storage's own layout: kv_row_bytes(format().k,
  // head_dim) bytes per K row, likewise V (either pointer may be null). Exact: no rounding.
  virtual void read_stored(int layer, int head, int first, int n, void* k, void* v) const;
  // Appends n rows given in the storage's own layout (as read_stored wrote them).
  virtual void append_stored(int layer, int head, const void* k, const void* v, int n);

 protected:
  int n_layer_, n_head_kv_, head_dim_;
};

}  // namespace tappa
