// KV-cache storage formats (issue 21): the row codecs, FormatKvCache's list operations on stored
// rows (compaction moves whole rows; bytes held = rows × the format's row size), the Walsh-Hadamard
// rotation, sequence state in a stored format, and the engine on each format: batched decoding equal
// to alone bit for bit, compression on a quantized cache, errors for formats a model cannot hold.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kv/compressor.h"
#include "kv/format_kv_cache.h"
#include "kv/host_kv_cache.h"
#include "kv/kv_format.h"
#include "quant/quant.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "test_util.h"

namespace tappa {
namespace {

constexpr KvType kAll[] = {KvType::f32, KvType::f16, KvType::bf16, KvType::q8_0, KvType::q4_0};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(KvFormat, NamesRowBytesAndResolution) {
  for (KvType t : kAll) EXPECT_EQ(parse_kv_type(kv_type_name(t)), t);
  EXPECT_FALSE(parse_kv_type("q4_1").has_value());
  // ggml's block sizes: q8_0 = 2 + 32 bytes per 32 values, q4_0 = 2 + 16.
  EXPECT_EQ(kv_row_bytes(KvType::f32, 64), 256u);
  EXPECT_EQ(kv_row_bytes(KvType::f16, 64), 128u);
  EXPECT_EQ(kv_row_bytes(KvType::bf16, 64), 128u);
  EXPECT_EQ(kv_row_bytes(KvType::q8_0, 64), 68u);
  EXPECT_EQ(kv_row_bytes(KvType::q4_0, 64), 36u);
  EXPECT_EQ(kv_row_bytes(KvType::q4_0, 256), 144u);
  // Automatic rotation: quantized K and V only (llama.cpp's rule), and only with head_dim % 64 == 0.
  KvCacheFormat f = resolve_kv_format({KvType::q8_0, KvType::f16, KvRotation::automatic}, 64);
  EXPECT_TRUE(f.rotate_k);
  EXPECT_FALSE(f.rotate_v);
  f = resolve_kv_format({KvType::q4_0, KvType::q4_0, KvRotation::off}, 128);
  EXPECT_FALSE(f.rotate_k || f.rotate_v);
  f = resolve_kv_format({KvType::f16, KvType::f16, KvRotation::on}, 256);
  EXPECT_TRUE(f.rotate_k && f.rotate_v);
  EXPECT_TRUE(resolve_kv_format({}, 80).is_f32());
  EXPECT_THROW(resolve_kv_format({KvType::q8_0, KvType::f16, KvRotation::automatic}, 80), Error);
  EXPECT_THROW(resolve_kv_format({KvType::f16, KvType::f16, KvRotation::on}, 96), Error);
  EXPECT_EQ(kv::kv_rot_block_k(64), 64);
  EXPECT_EQ(kv::kv_rot_block_k(128), 128);
  EXPECT_EQ(kv::kv_rot_block_k(192), 64);
  EXPECT_EQ(kv::kv_rot_block_k(256), 256);
}

// H_b is orthonormal and its own inverse; H_b of a basis vector is ±1/sqrt(b) everywhere.
TEST(KvFormat, HadamardIsAnOrthonormalInvolution) {
  for (int b : {64, 128, 256}) {
    std::vector<float> e(b, 0.0f);
    e[5] = 1.0f;
    kv::hadamard_blocks(e.data(), b, b);
    for (float x : e) EXPECT_NEAR(std::fabs(x), 1.0 / std::sqrt(b), 1e-7) << b;
    auto x = randn(2 * b, 3 + b), y = x;
    kv::hadamard_blocks(y.data(), 2 * b, b);
    double n0 = 0, n1 = 0;
    for (int i = 0; i < 2 * b; ++i) n0 += double(x[i]) * x[i], n1 += double(y[i]) * y[i];
    EXPECT_NEAR(n1, n0, 1e-5 * n0) << "norm kept";
    kv::hadamard_blocks(y.data(), 2 * b, b);
    for (int i = 0; i < 2 * b; ++i) EXPECT_NEAR(y[i], x[i], 1e-6 * (1 + std::fabs(x[i]))) << b << " " << i;
  }
}

// Each codec stores what quant::quantize_row stores (ggml's block layout) and decodes to what
// quant::dequantize_row gives; rotation is undone on the way out, to within the format's rounding.
TEST(KvFormat, RowCodecsAgreeWithTheQuantReference) {
  const int HD = 128;
  const auto x = randn(HD, 7);
  std::vector<float> tmp(HD), back(HD), ref(HD);
  for (KvType t : kAll) {
    std::vector<uint8_t> a(kv_row_bytes(t, HD)), b(a.size());
    kv::encode_row(t, 0, x.data(), a.data(), HD, tmp.data());
    quant::quantize_row(kv::kv_tensor_type(t), x.data(), b.data(), HD);
    EXPECT_EQ(a, b) << kv_type_name(t);
    kv::decode_row(t, 0, a.data(), back.data(), HD);
    quant::dequantize_row(kv::kv_tensor_type(t), b.data(), ref.data(), HD);
    EXPECT_EQ(std::memcmp(back.data(), ref.data(), sizeof(float) * HD), 0) << kv_type_name(t);
    // Rotated: the decoded row is the input to within the type's step (q4_0: d/2 of a block with
    // max |x| ~ 3 sigma, spread by the rotation; generous 0.6 bound, 0.02 for q8_0, 2^-8 rel. for f16).
    kv::encode_row(t, HD, x.data(), a.data(), HD, tmp.data());
    kv::decode_row(t, HD, a.data(), back.data(), HD);
    const double tol = t == KvType::q4_0 ? 0.6 : t == KvType::q8_0 ? 0.05 : t == KvType::f32 ? 1e-6 : 0.02;
    for (int i = 0; i < HD; ++i) EXPECT_NEAR(back[i], x[i], tol) << kv_type_name(t) << " " << i;
  }
}

// Rotation helps the block formats on rows with an outlier channel (the case it exists for): the
// round-trip error of q4_0 falls, because the block scale is no longer set by one large value.
TEST(KvFormat, RotationLowersTheBlockErrorOfAnOutlierRow) {
  const int HD = 64;
  auto x = randn(HD, 11, 0.3f);
  x[3] = 12.0f;  // a massive channel, as K of RoPE'd attention heads has
  std::vector<float> tmp(HD), back(HD);
  for (KvType t : {KvType::q8_0, KvType::q4_0}) {
    double err[2];
    for (int rot : {0, 1}) {
      std::vector<uint8_t> a(kv_row_bytes(t, HD));
      kv::encode_row(t, rot ? HD : 0, x.data(), a.data(), HD, tmp.data());
      kv::decode_row(t, rot ? HD : 0, a.data(), back.data(), HD);
      double e = 0;
      for (int i = 0; i < HD; ++i) e += (double(back[i]) - x[i]) * (double(back[i]) - x[i]);
      err[rot] = e;
    }
    EXPECT_LT(err[1], err[0]) << kv_type_name(t);
  }
}

// --- FormatKvCache ------------------------------------------------------------------------------

constexpr int kLayers = 2, kHeads = 3, kDim = 64;

void fill(KvCache& c, int rows, uint32_t seed) {
  c.reserve_extra(rows);
  for (int l = 0; l < kLayers; ++l)
    for (int h = 0; h < kHeads; ++h) {
      const auto k = randn(static_cast<size_t>(rows) * kDim, seed + 10 * l + h), v = randn(k.size(), seed + 100 + 10 * l + h);
      c.append(l, h, k.data(), v.data(), rows, kDim);
    }
}

std::vector<uint8_t> stored(const KvCache& c, int l, int h) {
  const KvCacheFormat f = c.format();
  const int n = c.length(l, h);
  std::vector<uint8_t> k(n * kv_row_bytes(f.k, kDim)), v(n * kv_row_bytes(f.v, kDim));
  c.read_stored(l, h, 0, n, k.data(), v.data());
  k.insert(k.end(), v.begin(), v.end());
  return k;
}

// Row r's stored bytes (K then V).
std::vector<uint8_t> stored_row(const KvCache& c, int l, int h, int r) {
  const KvCacheFormat f = c.format();
  std::vector<uint8_t> k(kv_row_bytes(f.k, kDim)), v(kv_row_bytes(f.v, kDim));
  c.read_stored(l, h, r, 1, k.data(), v.data());
  k.insert(k.end(), v.begin(), v.end());
  return k;
}

TEST(KvFormat, CompactionMovesWholeStoredRows) {
  for (const KvCacheFormat f : {KvCacheFormat{KvType::q4_0, KvType::q8_0, true, true}, KvCacheFormat{KvType::f16, KvType::bf16, false, false},
                                KvCacheFormat{KvType::q8_0, KvType::f32, false, false}}) {
    SCOPED_TRACE(kv_format_name(f));
    FormatKvCache c(kLayers, kHeads, kDim, f);
    fill(c, 40, 1);
    std::vector<std::vector<uint8_t>> rows;
    for (int r = 0; r < 40; ++r) rows.push_back(stored_row(c, 1, 2, r));
    // Ascending (in place), then out of order (through the gather buffer), then a window.
    const std::vector<int> keep = {0, 3, 4, 9, 17, 30, 39};
    c.keep_rows(1, 2, keep);
    ASSERT_EQ(c.length(1, 2), 7);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(stored_row(c, 1, 2, i), rows[keep[i]]) << i;
    const std::vector<int> perm = {6, 0, 2};
    c.keep_rows(1, 2, perm);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(stored_row(c, 1, 2, i), rows[keep[perm[i]]]) << i;
    c.keep_last(1, 1, 5);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(stored_row(c, 1, 1, i), stored_row(c, 1, 1, i));
    EXPECT_EQ(c.length(1, 1), 5);
    EXPECT_EQ(c.length(0, 0), 40);  // other lists untouched
    // read() after compaction = decoding the moved rows.
    std::vector<float> k(3 * kDim), v(3 * kDim), kk(kDim), vv(kDim);
    c.read(1, 2, 0, 3, k.data(), v.data());
    for (int i = 0; i < 3; ++i) {
      const auto& b = rows[keep[perm[i]]];
      kv::decode_row(f.k, f.rotate_k ? kDim : 0, b.data(), kk.data(), kDim);
      kv::decode_row(f.v, f.rotate_v ? 64 : 0, b.data() + kv_row_bytes(f.k, kDim), vv.data(), kDim);
      EXPECT_EQ(std::memcmp(k.data() + i * kDim, kk.data(), sizeof(float) * kDim), 0);
      EXPECT_EQ(std::memcmp(v.data() + i * kDim, vv.data(), sizeof(float) * kDim), 0);
    }
  }
}

// Bytes held per token equal the format's size: after shrink_to_fit, held = used = Σ rows × row bytes.
TEST(KvFormat, BytesHeldAreTheFormatsSize) {
  for (KvType t : kAll) {
    const KvCacheFormat f{t, t, false, false};
    auto c = make_host_kv_cache(kLayers, kHeads, kDim, f);
    fill(*c, 33, 2);
    c->keep_first(0, 1, 20);
    c->shrink_to_fit();
    const size_t rows = 33 * (kLayers * kHeads - 1) + 20;
    const size_t row = 2 * kv_row_bytes(t, kDim);
    EXPECT_EQ(c->row_bytes(), row) << kv_type_name(t);
    EXPECT_EQ(c->bytes_used(), rows * row) << kv_type_name(t);
    EXPECT_EQ(c->bytes_held(), rows * row) << kv_type_name(t);
  }
  // Per token and list: f32 512 B, f16 256 B, q8_0 136 B, q4_0 72 B (head_dim 64, K + V).
  EXPECT_EQ(2 * kv_row_bytes(KvType::q8_0, 64), 136u);
}

TEST(KvFormat, CloneAndStoredCopiesAreExact) {
  const KvCacheFormat f{KvType::q4_0, KvType::q8_0, true, true};
  FormatKvCache a(kLayers, kHeads, kDim, f);
  fill(a, 25, 3);
  const auto b = a.clone();
  FormatKvCache c(kLayers, kHeads, kDim, f);
  for (int l = 0; l < kLayers; ++l)
    for (int h = 0; h < kHeads; ++h) {
      const auto s = stored(a, l, h);
      EXPECT_EQ(stored(*b, l, h), s);
      const size_t kb = 25 * kv_row_bytes(f.k, kDim);
      c.append_stored(l, h, s.data(), s.data() + kb, 25);
      EXPECT_EQ(stored(c, l, h), s);
    }
  EXPECT_EQ(b->format(), f);
  EXPECT_EQ(a.keys(0, 0), nullptr);  // no fp32 rows to point at
  FormatKvCache plain(1, 1, kDim, KvCacheFormat{KvType::f32, KvType::q8_0, false, false});
  const auto row = randn(kDim, 9);
  plain.reserve_extra(0, 1);
  plain.append(0, 0, row.data(), row.data(), 1, kDim);
  EXPECT_EQ(std::memcmp(plain.keys(0, 0), row.data(), sizeof(float) * kDim), 0);
  EXPECT_NE(plain.keys(0, 0), nullptr);  // fp32 K (not rotated) is host fp32
  EXPECT_EQ(plain.values(0, 0), nullptr);
}

// --- the engine on each format --------------------------------------------------------------------

std::shared_ptr<Model> load_default() { return Model::load(test::default_model()); }

std::vector<int32_t> prompt_tokens(const Model& m, int n) {
  const std::string text = test::slurp(test::source_dir() + "/tests/data/prompts/prose_lighthouse.txt");
  auto t = m.tokenizer().encode(text, true, false);
  t.resize(std::min<size_t>(t.size(), n));
  return t;
}

// Decoding several sequences of different formats together gives each the bits it gets alone, and
// save/restore and fork of a stored-format sequence continue exactly.
TEST(KvFormatEngine, BatchedEqualsAloneAndStateIsExact) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 512;
  Engine e(model, eo);
  const std::vector<KvCacheType> types = {
      {KvType::f16, KvType::f16, KvRotation::automatic}, {KvType::q8_0, KvType::q8_0, KvRotation::automatic},
      {KvType::q4_0, KvType::q4_0, KvRotation::off},     {KvType::q8_0, KvType::f16, KvRotation::automatic},
      {KvType::bf16, KvType::q4_0, KvRotation::automatic}};
  const auto p = prompt_tokens(*model, 120);
  constexpr int kGen = 6;
  std::vector<std::vector<float>> alone;
  for (size_t i = 0; i < types.size(); ++i) {
    auto s = e.new_sequence(SequenceOptions{0, types[i]});
    auto logits = e.eval(*s, std::span<const int32_t>(p.data(), 60 + 10 * i));
    for (int g = 0; g < kGen; ++g) {
      const int32_t next = argmax(logits);
      logits = e.eval(*s, std::span<const int32_t>(&next, 1));
    }
    alone.emplace_back(logits.begin(), logits.end());
  }
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (size_t i = 0; i < types.size(); ++i) {
    seqs.push_back(e.new_sequence(SequenceOptions{0, types[i]}));
    e.eval(*seqs.back(), std::span<const int32_t>(p.data(), 60 + 10 * i));
  }
  std::vector<int32_t> next(types.size());
  std::vector<Engine::Step> steps(types.size());
  for (int g = 0; g < kGen; ++g) {
    for (size_t i = 0; i < types.size(); ++i) {
      next[i] = argmax(seqs[i]->logits());
      steps[i] = {seqs[i].get(), std::span<const int32_t>(&next[i], 1)};
    }
    e.decode(steps);
  }
  for (size_t i = 0; i < types.size(); ++i) {
    const auto l = seqs[i]->logits();
    ASSERT_EQ(l.size(), alone[i].size());
    EXPECT_EQ(std::memcmp(l.data(), alone[i].data(), l.size() * sizeof(float)), 0) << kv_format_name(seqs[i]->cache().format());
  }

  // save / restore / fork of a q4_0 sequence: the continuation is bit-identical.
  Sequence& s = *seqs[2];
  const auto state = s.save();
  const auto forked = s.fork();
  const int32_t t = 42;
  const std::vector<float> direct = [&] {
    auto l = e.eval(s, std::span<const int32_t>(&t, 1));
    return std::vector<float>(l.begin(), l.end());
  }();
  auto r = e.new_sequence(SequenceOptions{0, types[2]});
  r->restore(state);
  auto lr = e.eval(*r, std::span<const int32_t>(&t, 1));
  EXPECT_EQ(std::memcmp(lr.data(), direct.data(), direct.size() * sizeof(float)), 0);
  auto lf = e.eval(*forked, std::span<const int32_t>(&t, 1));
  EXPECT_EQ(std::memcmp(lf.data(), direct.data(), direct.size() * sizeof(float)), 0);
  EXPECT_EQ(forked->cache().format(), s.cache().format());
  // A stored-format state does not restore into another format (one clear error).
  auto other = e.new_sequence(SequenceOptions{0, types[0]});
  try {
    other->restore(state);
    FAIL() << "restored a q4_0 state into an f16 sequence";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("q4_0/q4_0"), std::string::npos) << err.what();
  }
  // An fp32 state (version 1) restores into any format.
  auto f32 = e.new_sequence();
  e.eval(*f32, std::span<const int32_t>(p.data(), 30));
  auto q8 = e.new_sequence(SequenceOptions{0, types[1]});
  q8->restore(f32->save());
  EXPECT_EQ(q8->cache().length(0, 0), 30);
  EXPECT_EQ(q8->cache().bytes_used(), static_cast<size_t>(30) * model->config().n_layer * model->config().n_head_kv *
                                          2 * kv_row_bytes(KvType::q8_0, model->config().head_dim));
}

// The formats change logits only by their rounding: the first prompt's last logits of every format
// stay near the fp32 cache's (bounded loosely: the Q4_1 model amplifies any perturbation, even a
// reassociation of fp32 sums, to ~1 logit; see docs/KV_FORMATS.md) and keep its top token.
TEST(KvFormatEngine, FormatsStayNearTheFp32Cache) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 256;
  Engine e(model, eo);
  const auto p = prompt_tokens(*model, 100);
  auto ref = e.new_sequence();
  auto lref = e.eval(*ref, p);
  const int top = argmax(lref);
  for (KvType t : {KvType::f16, KvType::bf16, KvType::q8_0}) {
    auto s = e.new_sequence(SequenceOptions{0, KvCacheType{t, t, KvRotation::automatic}});
    auto l = e.eval(*s, p);
    double m = 0;
    for (size_t i = 0; i < l.size(); ++i) m = std::max(m, std::fabs(double(l[i]) - lref[i]));
    EXPECT_LT(m, 4.0) << kv_type_name(t);
    EXPECT_EQ(argmax(l), top) << kv_type_name(t);
  }
}

// Compression on a quantized cache: the method scores the decoded rows and evicts whole rows; the
// memory given back is the format's (bytes_held after = kept rows × q8_0 row size).
TEST(KvFormatEngine, CompressionOnAQuantizedCache) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = load_default();
  const ModelConfig& c = model->config();
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 512;
  eo.cache = {KvType::q8_0, KvType::q8_0, KvRotation::automatic};
  Engine e(model, eo);
  const auto p = prompt_tokens(*model, 300);
  for (const char* method : {"snapkv", "tappa", "knorm", "expected-attention"}) {
    kv::CompressorFlags f;
    f.method = method;
    f.budget = 64;
    kv::KvCompressor comp(*model, kv::make_compressor_options(f));
    auto s = e.new_sequence();
    s->set_policy(&comp);
    e.eval(*s, p);
    const size_t row = 2 * kv_row_bytes(KvType::q8_0, c.head_dim);
    size_t rows = 0;
    for (int l = 0; l < c.n_layer; ++l)
      for (int h = 0; h < c.n_head_kv; ++h) {
        rows += s->cache().length(l, h);
        EXPECT_LE(s->cache().length(l, h), static_cast<int>(p.size()));
      }
    EXPECT_TRUE(comp.record().compressed) << method;
    EXPECT_LT(rows, p.size() * c.n_layer * c.n_head_kv / 2) << method;
    EXPECT_EQ(s->cache().bytes_used(), rows * row) << method;
    EXPECT_EQ(comp.record().bytes_held_before, p.size() * c.n_layer * c.n_head_kv * row) << method;
    // A few decode steps with eviction on the quantized rows.
    s->set_policy(&comp);
    for (int g = 0; g < 4; ++g) {
      const int32_t next = argmax(s->logits());
      e.eval(*s, std::span<const int32_t>(&next, 1));
    }
  }
}

}  // namespace
}  // namespace tappa
