// Decode attention micro-benchmark: one query token per head of a GQA group against one KV head's
// cached rows (cpu::attention_rows, single_token — the call tg128 @ d4096 makes 30 × 3 times per
// token on the default model). Arguments: cached rows, head_dim, query heads per KV head.
// Counter "GB/s": K and V bytes read per CPU second (each row is read once for the whole group), to
// compare with BM_MemRead in matmul_bench.cpp.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backend/cpu/attention.h"

namespace {

// One decode step's attention: `lists` (layer, KV head) caches of n rows each, visited in turn as a
// forward pass visits them. With 90 lists (30 layers x 3 KV heads, the default model) of 4096 rows
// the caches total 189 MB and come from DRAM, as in tg128 @ d4096; with 1 list they stay in L2/L3.
void BM_DecodeAttention(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int hd = static_cast<int>(state.range(1));
  const int group = static_cast<int>(state.range(2));
  const int lists = static_cast<int>(state.range(3));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t list_floats = static_cast<size_t>(n) * hd;
  std::vector<float> K(list_floats * lists), V(K.size()), Q(static_cast<size_t>(group) * hd);
  for (float& x : K) x = nd(rng);
  for (float& x : V) x = nd(rng);
  for (float& x : Q) x = nd(rng);
  std::vector<float> probs(static_cast<size_t>(group) * n), out(static_cast<size_t>(group) * hd);
  std::vector<tappa::cpu::AttentionRow> rows(group);
  std::vector<float*> pp(group), oo(group);
  for (int h = 0; h < group; ++h) {
    rows[h] = {Q.data() + h * hd, K.data(), V.data(), 0, n, hd, 0.125f, true};
    pp[h] = probs.data() + static_cast<size_t>(h) * n;
    oo[h] = out.data() + static_cast<size_t>(h) * hd;
  }
  for (auto _ : state) {
    for (int l = 0; l < lists; ++l) {
      for (int h = 0; h < group; ++h) {
        rows[h].K = K.data() + list_floats * l;
        rows[h].V = V.data() + list_floats * l;
      }
      tappa::cpu::attention_rows(rows.data(), group, pp.data(), oo.data());
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(2 * K.size() * sizeof(float)) * state.iterations(),
                                              benchmark::Counter::kIsRate);
}

}  // namespace

// SmolLM2 (head_dim 64, 3 query heads per KV head) at several depths; Gemma 3 270M (256, 4).
BENCHMARK(BM_DecodeAttention)
    ->Args({1024, 64, 3, 1})
    ->Args({4096, 64, 3, 1})
    ->Args({4096, 64, 3, 90})
    ->Args({4096, 256, 4, 1})
    ->ArgNames({"rows", "head_dim", "group", "lists"})
    ->Unit(benchmark::kMicrosecond);

// The same step over caches stored as f16 / q8_0 / q4_0 (attention_kv_quant.cpp; K and V of one
// type, rotated when quantized as the engine's automatic setting does). Extra argument: the type
// (0 f32 through this kernel, 1 f16, 2 bf16, 3 q8_0, 4 q4_0). "GB/s" counts the stored bytes.
#include "backend/cpu/attention_kv_quant.h"
#include "kv/format_kv_cache.h"

namespace {

void BM_DecodeAttentionKv(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int hd = static_cast<int>(state.range(1));
  const int group = static_cast<int>(state.range(2));
  const int lists = static_cast<int>(state.range(3));
  const auto type = static_cast<tappa::KvType>(state.range(4));
  const bool rot = tappa::kv_type_is_quantized(type);
  tappa::FormatKvCache cache(lists, 1, hd, tappa::KvCacheFormat{type, type, rot, rot});
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> K(static_cast<size_t>(n) * hd), V(K.size()), Q(static_cast<size_t>(group) * hd);
  for (int l = 0; l < lists; ++l) {
    for (float& x : K) x = nd(rng);
    for (float& x : V) x = nd(rng);
    cache.reserve_extra(l, n);
    cache.append(l, 0, K.data(), V.data(), n, hd);
  }
  for (float& x : Q) x = nd(rng);
  std::vector<float> probs(static_cast<size_t>(group) * n), out(static_cast<size_t>(group) * hd);
  std::vector<const float*> qs(group);
  std::vector<float> scales(group, 0.125f);
  std::vector<float*> pp(group), oo(group);
  for (int h = 0; h < group; ++h) {
    qs[h] = Q.data() + h * hd;
    pp[h] = probs.data() + static_cast<size_t>(h) * n;
    oo[h] = out.data() + static_cast<size_t>(h) * hd;
  }
  for (auto _ : state) {
    for (int l = 0; l < lists; ++l) {
      const tappa::cpu::KvList list{cache.k_data(l, 0), cache.v_data(l, 0), cache.k_row_bytes(), cache.v_row_bytes(),
                                    type, type, cache.k_rot_block(), cache.v_rot_block()};
      tappa::cpu::attention_rows_kv(list, 0, n, hd, qs.data(), scales.data(), group, pp.data(), oo.data());
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(cache.bytes_used()) * state.iterations(),
                                              benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_DecodeAttentionKv)
    ->ArgsProduct({{4096}, {64}, {3}, {1, 90}, {0, 1, 3, 4}})
    ->Args({4096, 256, 4, 1, 1})
    ->Args({4096, 256, 4, 1, 3})
    ->ArgNames({"rows", "head_dim", "group", "lists", "type"})
    ->Unit(benchmark::kMicrosecond);
