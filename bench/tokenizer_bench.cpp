// Tokenizer speed (was a timed unit test; speed targets live here, not in the test suite).
//
//   BM_TokenizerEncode200KB   encode 200 KiB of the tokenizer test corpus (tests/data/tokenizer/mixed.txt,
//                             repeated) with a fresh tokenizer each iteration, so no word is cached yet.
//                             Counter MB (shown as MB/s). The old test's target: under 1 s (> 0.2 MB/s) in Release.
//   BM_TokenizerHostile/N     encode N bytes of "a" (one word: the BPE merge queue on a huge word) and of
//                             " \r\n\t" (whitespace pre-tokenizer rules). Compare N = 256K and 1M: the time
//                             should grow ~x4 (tests/tokenizer_test.cpp checks the work count instead).
//
// Run from the repository root: build-rel9/tappa_microbench --benchmark_filter=Tokenizer
// (the default model, or $TAPPA_MODEL; skipped with a message when it is missing).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "tappa/gguf.h"
#include "tappa/tokenizer.h"

namespace {

std::string model_path() {
  if (const char* env = std::getenv("TAPPA_MODEL"); env && *env) return env;
  return "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

const tappa::GgufFile* model_file() {
  static std::unique_ptr<tappa::GgufFile> file = [] {
    std::unique_ptr<tappa::GgufFile> f;
    if (std::filesystem::exists(model_path())) f = std::make_unique<tappa::GgufFile>(tappa::GgufFile::open(model_path()));
    return f;
  }();
  return file.get();
}

std::string corpus(size_t bytes) {
  std::ifstream in("tests/data/tokenizer/mixed.txt", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.empty()) text = "The quick brown fox jumps over the lazy dog. 12345 caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\n";
  while (text.size() < bytes) text += text;
  text.resize(bytes);
  return text;
}

void BM_TokenizerEncode200KB(benchmark::State& state) {
  const tappa::GgufFile* file = model_file();
  if (!file) {
    state.SkipWithError(("model " + model_path() + " not found (scripts/fetch_model.sh)").c_str());
    return;
  }
  const std::string text = corpus(200 * 1024);
  size_t tokens = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const tappa::Tokenizer tok = tappa::Tokenizer::from_gguf(*file);
    state.ResumeTiming();
    tokens = tok.encode(text, true, false).size();
    benchmark::DoNotOptimize(tokens);
  }
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["MB"] = benchmark::Counter(static_cast<double>(text.size()) * state.iterations() / 1e6,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TokenizerEncode200KB)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_TokenizerHostile(benchmark::State& state) {
  const tappa::GgufFile* file = model_file();
  if (!file) {
    state.SkipWithError(("model " + model_path() + " not found (scripts/fetch_model.sh)").c_str());
    return;
  }
  const tappa::Tokenizer tok = tappa::Tokenizer::from_gguf(*file);
  const size_t n = static_cast<size_t>(state.range(0));
  const std::string letters(n, 'a');
  std::string spaces;
  while (spaces.size() < n) spaces += " \r\n\t";
  for (auto _ : state) {
    benchmark::DoNotOptimize(tok.encode(letters, false, false).size());
    benchmark::DoNotOptimize(tok.encode(spaces, false, false).size());
  }
  state.counters["MB"] = benchmark::Counter(2.0 * static_cast<double>(n) * state.iterations() / 1e6,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TokenizerHostile)->Arg(256 << 10)->Arg(1 << 20)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
