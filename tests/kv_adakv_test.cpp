// AdaKV allocator (src/kv/adakv.cpp): the layer's H_kv·b rows go to the highest scores of all its KV
// heads together, after each head's own top ⌊α·b⌋. Checked by a hand example and, on random scores,
// by the defining properties: the total is H_kv·b, every head has its safeguard, and no row left out
// beyond the safeguards scores above a row taken.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kv/methods.h"

namespace tappa::kv {
namespace {

std::vector<int> split(const std::vector<std::vector<float>>& heads, int b, double alpha) {
  LayerScores s;
  s.n_head_kv = static_cast<int>(heads.size());
  s.n_prefix = static_cast<int>(heads[0].size());
  for (const auto& h : heads) s.scores.insert(s.scores.end(), h.begin(), h.end());
  MethodOptions o;
  o.adakv_alpha = alpha;
  return find_allocator("adakv").head_budgets(o, s, b);
}

TEST(KvAdaKv, HandExample) {
  // b = 2 per head, 4 rows to give: head 0 has the 3 largest scores, head 1 one of the next.
  const std::vector<std::vector<float>> h = {{0.9f, 0.8f, 0.7f, 0.0f}, {0.1f, 0.6f, 0.0f, 0.0f}};
  EXPECT_EQ(split(h, 2, 0.0), (std::vector<int>{3, 1}));
  EXPECT_EQ(split(h, 2, 0.5), (std::vector<int>{3, 1}));  // safeguard 1 each: head 1 keeps its 0.6 anyway
  EXPECT_EQ(split(h, 2, 1.0), (std::vector<int>{2, 2}));  // safeguard = b: uniform
  EXPECT_EQ(split(h, 9, 0.2), (std::vector<int>{4, 4}));  // b beyond P: every row
}

TEST(KvAdaKv, RandomScoresTakeTheGlobalTopAfterTheSafeguard) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int H = 1 + static_cast<int>(rng() % 4), P = 5 + static_cast<int>(rng() % 40);
    const int b = 1 + static_cast<int>(rng() % P);
    const double alpha = (rng() % 5) / 4.0;
    std::vector<std::vector<float>> heads(H, std::vector<float>(P));
    // Per-head scales differ, so a head-blind split would be uniform and a wrong one visible.
    for (int h = 0; h < H; ++h)
      for (float& x : heads[h]) x = std::exponential_distribution<float>(1.0f + h)(rng);
    const std::vector<int> got = split(heads, b, alpha);
    ASSERT_EQ(static_cast<int>(got.size()), H);
    const int safe = static_cast<int>(std::floor(alpha * b));
    int total = 0;
    float min_taken = INFINITY, max_left = -INFINITY;
    for (int h = 0; h < H; ++h) {
      EXPECT_GE(got[h], H > 1 ? safe : b);
      EXPECT_LE(got[h], P);
      total += got[h];
      std::vector<float> sorted = heads[h];
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      for (int r = safe; r < P; ++r) {
        if (r < got[h])
          min_taken = std::min(min_taken, sorted[r]);
        else
          max_left = std::max(max_left, sorted[r]);
      }
    }
    EXPECT_EQ(total, H * b) << "H " << H << " P " << P << " b " << b;
    if (H > 1 && min_taken != INFINITY && max_left != -INFINITY) EXPECT_GE(min_taken, max_left) << "trial " << trial;
  }
}

}  // namespace
}  // namespace tappa::kv
