// A small deterministic random generator for the task generators. std::mt19937 is portable but the
// std::*_distribution classes are implementation-defined, so the same seed could give different
// prompts with another standard library; every draw here is plain integer arithmetic instead.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tappa::evalkv {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  // SplitMix64 step.
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias (n > 0).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }
  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1)); }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  uint64_t state_;
};

// A seed for one (task, sample) pair that does not depend on which other samples are generated.
inline uint64_t mix_seed(uint64_t seed, const std::string& task, uint64_t a, uint64_t b = 0) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;  // FNV-1a over the task name, then SplitMix of the rest
  for (unsigned char c : task) h = (h ^ c) * 0x100000001b3ull;
  Rng r(h ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full));
  return r.next();
}

}  // namespace tappa::evalkv
