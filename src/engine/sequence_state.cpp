// Sequence::save / restore: a sequence's whole state as bytes (llama.cpp's llama_state_seq_* in
// spirit), so that a prepared prompt can be put back without recomputing it (eval-kv replays one
// prefill for every method; a server can park a sequence).
//
// Layout (little-endian, this machine's float format):
//   "TPSQ" u32 version=1 | i32 n_layer, n_head_kv, head_dim | i64 n_past | u64 n_tokens | i32 tokens[]
//   then per (layer, KV head), layer-major: i32 length | f32 K[length][head_dim] | f32 V[length][head_dim]
// A cache stored in another format than fp32 (KvCacheFormat) is saved as version 2, its rows as
// stored (exact: restoring never rounds again):
//   "TPSQ" u32 version=2 | i32 n_layer, n_head_kv, head_dim | u8 k_type, v_type, rotate_k, rotate_v
//   | i64 n_past | u64 n_tokens | i32 tokens[] | per list: i32 length | K rows | V rows (stored bytes)
// A version-1 state restores into a cache of any format (its fp32 rows are stored as that format
// stores them); a version-2 state only into a cache of the same format.
// restore() checks every size against the bytes it was given before reading, and the shape against
// the sequence's own, so a truncated or foreign state is one clear error, never a bad read.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "engine/sequence_impl.h"
#include "tappa/model.h"
#include "tappa/error.h"

namespace tappa {
namespace {

constexpr char kMagic[4] = {'T', 'P', 'S', 'Q'};
constexpr uint32_t kVersion = 1;         // fp32 rows
constexpr uint32_t kVersionStored = 2;   // rows as stored, with the format

template <class T>
void put(std::vector<uint8_t>& out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  template <class T>
  T get(const char* what) {
    T v;
    bytes(&v, sizeof(T), what);
    return v;
  }
  void bytes(void* dst, size_t n, const char* what) {
    if (n > b_.size() - pos_) throw Error(std::string("sequence state is truncated (reading ") + what + ")");
    std::memcpy(dst, b_.data() + pos_, n);
    pos_ += n;
  }
  void skip(size_t n, const char* what) {
    if (n > b_.size() - pos_) throw Error(std::string("sequence state is truncated (reading ") + what + ")");
    pos_ += n;
  }
  size_t left() const { return b_.size() - pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> Sequence::save() const {
  const Impl& s = *impl_;
  const KvCache& c = *s.cache;
  std::vector<uint8_t> out;
  size_t rows = 0;
  for (int l = 0; l < c.n_layer(); ++l)
    for (int h = 0; h < c.n_head_kv(); ++h) rows += static_cast<size_t>(c.length(l, h));
  out.reserve(64 + s.tokens.size() * 4 + static_cast<size_t>(c.n_layer()) * c.n_head_kv() * 4 +
              rows * c.head_dim() * 2 * sizeof(float));
  const KvCacheFormat f = c.format();
  const bool stored = !f.is_f32();
  out.insert(out.end(), kMagic, kMagic + 4);
  put(out, stored ? kVersionStored : kVersion);
  put(out, static_cast<int32_t>(c.n_layer()));
  put(out, static_cast<int32_t>(c.n_head_kv()));
  put(out, static_cast<int32_t>(c.head_dim()));
  if (stored) {
    const uint8_t fb[4] = {static_cast<uint8_t>(f.k), static_cast<uint8_t>(f.v), f.rotate_k, f.rotate_v};
    out.insert(out.end(), fb, fb + 4);
  }
  put(out, static_cast<int64_t>(s.n_past));
  put(out, static_cast<uint64_t>(s.tokens.size()));
  const auto* tp = reinterpret_cast<const uint8_t*>(s.tokens.data());
  out.insert(out.end(), tp, tp + s.tokens.size() * sizeof(int32_t));
  std::vector<float> k, v;
  std::vector<uint8_t> kb, vb;
  const size_t k_row = kv_row_bytes(f.k, c.head_dim()), v_row = kv_row_bytes(f.v, c.head_dim());
  for (int l = 0; l < c.n_layer(); ++l) {
    for (int h = 0; h < c.n_head_kv(); ++h) {
      const int n = c.length(l, h);
      put(out, static_cast<int32_t>(n));
      if (stored) {
        kb.resize(n * k_row);
        vb.resize(n * v_row);
        if (n > 0) c.read_stored(l, h, 0, n, kb.data(), vb.data());
        out.insert(out.end(), kb.begin(), kb.end());
        out.insert(out.end(), vb.begin(), vb.end());
        continue;
      }
      const size_t floats = static_cast<size_t>(n) * c.head_dim();
      k.resize(floats);
      v.resize(floats);
      if (n > 0) c.read(l, h, 0, n, k.data(), v.data());
      const auto* kp = reinterpret_cast<const uint8_t*>(k.data());
      const auto* vp = reinterpret_cast<const uint8_t*>(v.data());
      out.insert(out.end(), kp, kp + floats * sizeof(float));
      out.insert(out.end(), vp, vp + floats * sizeof(float));
    }
  }
  return out;
}

void Sequence::restore(std::span<const uint8_t> state) {
  Impl& s = *impl_;
  KvCache& c = *s.cache;
  Reader r(state);
  char magic[4];
  r.bytes(magic, 4, "the magic");
  if (std::memcmp(magic, kMagic, 4) != 0) throw Error("not a tappa sequence state (bad magic)");
  const auto version = r.get<uint32_t>("the version");
  if (version != kVersion && version != kVersionStored)
    throw Error("sequence state version " + std::to_string(version) + " is not supported (expected 1 or 2)");
  const auto n_layer = r.get<int32_t>("the shape"), n_kv = r.get<int32_t>("the shape"), hd = r.get<int32_t>("the shape");
  // A state saved after query-head compression holds one list per query head: this sequence's cache
  // repeats its lists the same way (KvCache::repeat_lists) once the state is known to be good.
  const int n_head = s.engine->model().config().n_head;
  const int repeat = n_kv == n_head && c.n_head_kv() > 0 && n_head % c.n_head_kv() == 0 ? n_head / c.n_head_kv() : 1;
  if (n_layer != c.n_layer() || n_kv != c.n_head_kv() * repeat || hd != c.head_dim())
    throw Error("sequence state is for another model shape (" + std::to_string(n_layer) + " layers x " + std::to_string(n_kv) +
                " KV heads x " + std::to_string(hd) + ", this sequence has " + std::to_string(c.n_layer()) + " x " +
                std::to_string(c.n_head_kv()) + " x " + std::to_string(c.head_dim()) + ")");
  const bool stored = version == kVersionStored;
  size_t k_row = static_cast<size_t>(hd) * sizeof(float), v_row = k_row;  // bytes per row in the state
  if (stored) {
    uint8_t fb[4];
    r.bytes(fb, 4, "the cache format");
    if (fb[0] > static_cast<uint8_t>(KvType::q4_0) || fb[1] > static_cast<uint8_t>(KvType::q4_0) || fb[2] > 1 || fb[3] > 1)
      throw Error("sequence state has an unknown KV cache format");
    const KvCacheFormat f{static_cast<KvType>(fb[0]), static_cast<KvType>(fb[1]), fb[2] != 0, fb[3] != 0};
    if (!(f == c.format()))
      throw Error("sequence state holds a " + kv_format_name(f) + " KV cache, this sequence stores " +
                  kv_format_name(c.format()) + " (make the sequence with the same cache types)");
    k_row = kv_row_bytes(f.k, hd);
    v_row = kv_row_bytes(f.v, hd);
  }
  const auto n_past = r.get<int64_t>("n_past");
  const auto n_tokens = r.get<uint64_t>("the token count");
  if (n_past < 0 || n_past > s.n_ctx)
    throw Error("sequence state holds " + std::to_string(n_past) + " positions, more than the context of " +
                std::to_string(s.n_ctx));
  if (n_tokens != static_cast<uint64_t>(n_past)) throw Error("sequence state is inconsistent (token count != positions)");
  std::vector<int32_t> tokens(static_cast<size_t>(n_tokens));
  r.bytes(tokens.data(), tokens.size() * sizeof(int32_t), "the tokens");
  // Check every list's length and size before touching the cache, so a bad state leaves the sequence
  // as it was.
  std::vector<int32_t> lengths(static_cast<size_t>(n_layer) * n_kv);
  {
    Reader probe = r;
    for (int32_t& n : lengths) {
      n = probe.get<int32_t>("a list length");
      if (n < 0 || n > n_past)
        throw Error("sequence state has a list of " + std::to_string(n) + " rows (positions: " + std::to_string(n_past) + ")");
      probe.skip(static_cast<size_t>(n) * (k_row + v_row), "the cache rows");
    }
    if (probe.left() != 0) throw Error("sequence state has " + std::to_string(probe.left()) + " trailing bytes");
  }
  c.clear();
  c.repeat_lists(repeat);  // throws (one line) where the storage cannot; the lists are empty then
  std::vector<float> k, v;
  std::vector<uint8_t> kb, vb;
  for (int l = 0; l < n_layer; ++l) {
    int most = 0;
    for (int h = 0; h < n_kv; ++h) most = std::max(most, lengths[static_cast<size_t>(l) * n_kv + h]);
    c.reserve_extra(l, most);
    for (int h = 0; h < n_kv; ++h) {
      const int n = r.get<int32_t>("a list length");
      if (stored) {
        kb.resize(n * k_row);
        vb.resize(n * v_row);
        r.bytes(kb.data(), kb.size(), "the keys");
        r.bytes(vb.data(), vb.size(), "the values");
        if (n > 0) c.append_stored(l, h, kb.data(), vb.data(), n);
        continue;
      }
      const size_t floats = static_cast<size_t>(n) * hd;
      k.resize(floats);
      v.resize(floats);
      r.bytes(k.data(), floats * sizeof(float), "the keys");
      r.bytes(v.data(), floats * sizeof(float), "the values");
      if (n > 0) c.append(l, h, k.data(), v.data(), n, hd);
    }
  }
  s.n_past = n_past;
  s.tokens = std::move(tokens);
  s.logits.clear();
}

}  // namespace tappa
