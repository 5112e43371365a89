// Matmul micro-benchmarks on the default model's shapes (SmolLM2-135M: hidden 576, ffn 1536, vocab
// 49152) plus a memory-bandwidth reference.
//
//   GEMV (m = 1, decode): counters GB/s = weight bytes streamed per second. "Hot" runs reuse one
//     weight matrix (it stays in L2/L3); "Cold" runs rotate over copies totalling >= 256 MiB so the
//     weights come from DRAM as in a real forward pass. Compare with BM_MemRead.
//   GEMM (m = 512, prompt processing): counter GFLOP/s = 2 * rows * cols * m per second.
// All rates use wall-clock time (UseRealTime), so the two-thread runs are measured correctly.
// Arguments: rows, cols, threads (and m for GEMM).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/thread_pool.h"
#include "quant/quant.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

using tappa::TensorType;
using tappa::cpu::matmul;
using tappa::cpu::MatmulOrder;
using tappa::cpu::Scratch;
using tappa::cpu::ThreadPool;
using tappa::cpu::WeightView;

ThreadPool& pool(int threads) {
  static ThreadPool p1(1), p2(2), p4(4);
  return threads <= 1 ? p1 : threads == 2 ? p2 : p4;
}

// A rows x cols weight matrix in type t from random values (quantized row by row).
std::vector<uint8_t> make_weights(TensorType t, int64_t rows, int64_t cols) {
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const size_t rb = tappa::quant::row_bytes(t, cols);
  std::vector<uint8_t> w(rb * rows);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng);
    tappa::quant::quantize_row(t, row.data(), w.data() + rb * r, cols);
  }
  return w;
}

std::vector<float> make_acts(int64_t m, int64_t cols) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * cols);
  for (auto& v : x) v = nd(rng);
  return x;
}

void run_gemv(benchmark::State& state, TensorType t, bool cold) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const std::vector<uint8_t> w0 = make_weights(t, rows, cols);
  const size_t bytes = w0.size();
  // Cold: enough copies to exceed every cache level (256 MiB), visited round-robin.
  const size_t copies = cold ? std::max<size_t>(2, (size_t{256} << 20) / bytes + 1) : 1;
  std::vector<uint8_t> w(bytes * copies);
  for (size_t c = 0; c < copies; ++c) std::memcpy(w.data() + c * bytes, w0.data(), bytes);
  const auto x = make_acts(1, cols);
  std::vector<float> y(rows);
  Scratch scratch;
  size_t c = 0;
  for (auto _ : state) {
    matmul(WeightView{t, w.data() + c * bytes, rows, cols}, x.data(), 1, cols, y.data(), rows, pool(threads), scratch);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    if (++c == copies) c = 0;
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}

void run_gemm(benchmark::State& state, TensorType t, MatmulOrder order = MatmulOrder::Batch) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const int64_t m = state.range(3);
  const std::vector<uint8_t> w = make_weights(t, rows, cols);
  const auto x = make_acts(m, cols);
  std::vector<float> y(m * rows);
  Scratch scratch;
  for (auto _ : state) {
    matmul(WeightView{t, w.data(), rows, cols}, x.data(), m, cols, y.data(), rows, pool(threads), scratch, order);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(rows * cols * m) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

#define TAPPA_GEMV(NAME, TYPE)                                                         \
  void BM_Gemv_##NAME(benchmark::State& s) { run_gemv(s, TensorType::TYPE, false); } \
  [[maybe_unused]] void BM_GemvCold_##NAME(benchmark::State& s) { run_gemv(s, TensorType::TYPE, true); }
#define TAPPA_GEMM(NAME, TYPE) \
  void BM_Gemm_##NAME(benchmark::State& s) { run_gemm(s, TensorType::TYPE); }
// Batched decoding: m sequences' tokens, each row in the one-token order (MatmulOrder::PerToken).
#define TAPPA_DECODE_BATCH(NAME, TYPE) \
  void BM_DecodeBatch_##NAME(benchmark::State& s) { run_gemm(s, TensorType::TYPE, MatmulOrder::PerToken); }

TAPPA_GEMV(Q4_0, Q4_0)
TAPPA_GEMV(Q4_1, Q4_1)
TAPPA_GEMV(Q8_0, Q8_0)
TAPPA_GEMV(Q4_K, Q4_K)
TAPPA_GEMV(Q6_K, Q6_K)
TAPPA_GEMV(F16, F16)
TAPPA_GEMM(Q4_0, Q4_0)
TAPPA_GEMM(Q4_1, Q4_1)
TAPPA_GEMM(Q8_0, Q8_0)
TAPPA_GEMM(Q4_K, Q4_K)
TAPPA_GEMM(Q6_K, Q6_K)
TAPPA_GEMM(F32, F32)
TAPPA_GEMM(F16, F16)
TAPPA_DECODE_BATCH(Q4_1, Q4_1)
TAPPA_DECODE_BATCH(Q8_0, Q8_0)

// {rows, cols, threads}: the model's projections (gate/up 1536x576, down 576x1536, q/o 576x576,
// k/v 192x576) and the output head (49152x576).
void gemv_shapes(benchmark::internal::Benchmark* b) {
  for (int th : {1, 2}) {
    b->Args({1536, 576, th});
    b->Args({576, 1536, th});
    b->Args({576, 576, th});
    b->Args({192, 576, th});
  }
  b->ArgNames({"rows", "cols", "threads"})->UseRealTime();
}
void gemv_head(benchmark::internal::Benchmark* b) {
  b->Args({49152, 576, 1})->Args({49152, 576, 2})->ArgNames({"rows", "cols", "threads"})->UseRealTime();
}
void gemv_k_shapes(benchmark::internal::Benchmark* b) {
  for (int th : {1, 2}) b->Args({1536, 768, th})->Args({768, 1536, th});
  b->ArgNames({"rows", "cols", "threads"})->UseRealTime();
}
void gemm_shapes(benchmark::internal::Benchmark* b) {
  for (int th : {1, 2}) {
    b->Args({1536, 576, th, 512});
    b->Args({576, 1536, th, 512});
    b->Args({576, 576, th, 512});
  }
  b->ArgNames({"rows", "cols", "threads", "m"})->UseRealTime();
}
// {rows, cols, threads, m}: one decode step of m sequences (SmolLM2's gate/up, down, q/o, head).
void decode_batch_shapes(benchmark::internal::Benchmark* b) {
  for (int th : {1, 2})
    for (int m : {4, 16, 64, 256}) b->Args({1536, 576, th, m})->Args({576, 1536, th, m})->Args({576, 576, th, m});
  b->ArgNames({"rows", "cols", "threads", "m"})->UseRealTime();
}
void gemm_k_shapes(benchmark::internal::Benchmark* b) {
  for (int th : {1, 2}) b->Args({1536, 768, th, 512})->Args({768, 1536, th, 512});
  b->ArgNames({"rows", "cols", "threads", "m"})->UseRealTime();
}

BENCHMARK(BM_Gemv_Q4_0)->Apply(gemv_shapes);
BENCHMARK(BM_Gemv_Q4_1)->Apply(gemv_shapes);
BENCHMARK(BM_GemvCold_Q4_1)->Apply(gemv_shapes);
BENCHMARK(BM_Gemv_Q8_0)->Apply(gemv_shapes);
BENCHMARK(BM_Gemv_Q8_0)->Apply(gemv_head);
BENCHMARK(BM_GemvCold_Q8_0)->Apply(gemv_head);
BENCHMARK(BM_Gemv_Q4_K)->Apply(gemv_k_shapes);
BENCHMARK(BM_GemvCold_Q4_K)->Apply(gemv_k_shapes);
BENCHMARK(BM_Gemv_Q6_K)->Apply(gemv_k_shapes);
BENCHMARK(BM_GemvCold_Q6_K)->Apply(gemv_k_shapes);
BENCHMARK(BM_Gemv_F16)->Apply(gemv_shapes);
BENCHMARK(BM_Gemm_Q4_0)->Apply(gemm_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gemm_Q4_1)->Apply(gemm_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gemm_Q8_0)->Apply(gemm_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gemm_Q8_0)
    ->Args({49152, 576, 2, 512})
    ->ArgNames({"rows", "cols", "threads", "m"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeBatch_Q4_1)->Apply(decode_batch_shapes);
BENCHMARK(BM_DecodeBatch_Q8_0)->Args({49152, 576, 1, 16})->Args({49152, 576, 2, 16})->ArgNames({"rows", "cols", "threads", "m"})->UseRealTime();
BENCHMARK(BM_Gemm_Q4_K)->Apply(gemm_k_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gemm_Q6_K)->Apply(gemm_k_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gemm_F16)->Apply(gemm_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gemm_F32)
    ->Args({576, 576, 2, 512})
    ->ArgNames({"rows", "cols", "threads", "m"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Memory bandwidth reference: a streaming read (sum) of a 256 MiB buffer, and memcpy of 128 MiB.
void BM_MemRead(benchmark::State& state) {
  const size_t n = (size_t{256} << 20) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  for (auto _ : state) {
#if defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 32) {
      a0 = _mm256_add_ps(a0, _mm256_loadu_ps(buf.data() + i));
      a1 = _mm256_add_ps(a1, _mm256_loadu_ps(buf.data() + i + 8));
      a2 = _mm256_add_ps(a2, _mm256_loadu_ps(buf.data() + i + 16));
      a3 = _mm256_add_ps(a3, _mm256_loadu_ps(buf.data() + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    benchmark::DoNotOptimize(s);
#else
    float s = 0.0f;
    for (size_t i = 0; i < n; ++i) s += buf[i];
    benchmark::DoNotOptimize(s);
#endif
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(float)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MemRead)->UseRealTime()->Unit(benchmark::kMillisecond);

// Two threads reading halves of the buffer: the bandwidth two decode threads can get together.
void BM_MemRead2(benchmark::State& state) {
  const size_t n = (size_t{256} << 20) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  float sums[2] = {0, 0};
  for (auto _ : state) {
    pool(2).run([&](int t) {
      const float* p = buf.data() + t * (n / 2);
      float s = 0.0f;
#if defined(__AVX2__)
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t i = 0; i < n / 2; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
      }
      float tmp[8];
      _mm256_storeu_ps(tmp, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
      for (float v : tmp) s += v;
#else
      for (size_t i = 0; i < n / 2; ++i) s += p[i];
#endif
      sums[t] = s;
    });
    benchmark::DoNotOptimize(sums);
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(float)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MemRead2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Memcpy(benchmark::State& state) {
  const size_t n = size_t{128} << 20;
  std::vector<uint8_t> a(n, 1), b(n, 0);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s(read+write)"] =
      benchmark::Counter(2.0 * static_cast<double>(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Memcpy)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
