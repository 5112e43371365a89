// Batched decoding's matrix products (MatmulOrder::PerToken: every token exactly as alone, the
// weights read once for all) against one-token calls and the prompt GEMM (Batch order), on the
// default model's shapes. Counter "tok/s": tokens whose product with the whole matrix is done per
// second, so PerToken at m = 16 over m = 1 is the speed-up batching buys for this matrix.
// Arguments: rows, cols, m (tokens), threads.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/thread_pool.h"
#include "quant/quant.h"

namespace {

using tappa::TensorType;
using tappa::cpu::MatmulOrder;

tappa::cpu::ThreadPool& pool(int threads) {
  static tappa::cpu::ThreadPool p1(1), p2(2);
  return threads <= 1 ? p1 : p2;
}

void run(benchmark::State& state, TensorType t, MatmulOrder order) {
  const int64_t rows = state.range(0), cols = state.range(1), m = state.range(2);
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const size_t rb = tappa::quant::row_bytes(t, cols);
  std::vector<uint8_t> w(rb * rows);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng);
    tappa::quant::quantize_row(t, row.data(), w.data() + rb * r, cols);
  }
  std::vector<float> x(m * cols), y(m * rows);
  for (auto& v : x) v = nd(rng) * 20.0f;
  tappa::cpu::Scratch scratch;
  for (auto _ : state) {
    tappa::cpu::matmul({t, w.data(), rows, cols}, x.data(), m, cols, y.data(), rows, pool(static_cast<int>(state.range(3))),
                       scratch, order);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(m), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_PerToken_Q4_1(benchmark::State& s) { run(s, TensorType::Q4_1, MatmulOrder::PerToken); }
void BM_Batch_Q4_1(benchmark::State& s) { run(s, TensorType::Q4_1, MatmulOrder::Batch); }
void BM_PerToken_Q8_0(benchmark::State& s) { run(s, TensorType::Q8_0, MatmulOrder::PerToken); }
void BM_Batch_Q8_0(benchmark::State& s) { run(s, TensorType::Q8_0, MatmulOrder::Batch); }

void shapes(benchmark::internal::Benchmark* b) {
  for (int m : {1, 4, 16}) b->Args({1536, 576, m, 1});
}
void head(benchmark::internal::Benchmark* b) {
  for (int m : {1, 4, 16}) b->Args({49152, 576, m, 1});
}

}  // namespace

BENCHMARK(BM_PerToken_Q4_1)->Apply(shapes)->UseRealTime();
BENCHMARK(BM_Batch_Q4_1)->Apply(shapes)->UseRealTime();
BENCHMARK(BM_PerToken_Q8_0)->Apply(head)->UseRealTime();
BENCHMARK(BM_Batch_Q8_0)->Apply(head)->UseRealTime();
