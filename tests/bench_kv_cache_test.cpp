// KvCache::keep_rows as the decode loop uses it (issue 7): compaction in place, no allocation per
// evicting step, and memory really given back when shrink_to_fit is asked for.
#include <gtest/gtest.h>

#include <vector>

#include "kv/host_kv_cache.h"

namespace tappa {
namespace {

constexpr int kLayers = 2, kHeads = 2, kDim = 8;

// Row r of list (l, h) holds keys 1000·l + 100·h + r + j/16 and values the negative: every row is
// distinguishable, so a misplaced row shows.
float key_of(int l, int h, int r, int j) { return 1000.0f * l + 100.0f * h + r + j / 16.0f; }

void fill(KvCache& c, int rows) {
  c.reserve_extra(rows);
  std::vector<float> k(kDim), v(kDim);
  for (int l = 0; l < kLayers; ++l)
    for (int h = 0; h < kHeads; ++h)
      for (int r = 0; r < rows; ++r) {
        for (int j = 0; j < kDim; ++j) {
          k[j] = key_of(l, h, r, j);
          v[j] = -k[j];
        }
        c.append(l, h, k.data(), v.data(), 1, kDim);
      }
}

void expect_rows(const KvCache& c, int l, int h, const std::vector<int>& rows) {
  ASSERT_EQ(c.length(l, h), static_cast<int>(rows.size()));
  for (size_t i = 0; i < rows.size(); ++i)
    for (int j = 0; j < kDim; ++j) {
      EXPECT_EQ(c.keys(l, h)[i * kDim + j], key_of(l, h, rows[i], j)) << "row " << i;
      EXPECT_EQ(c.values(l, h)[i * kDim + j], -key_of(l, h, rows[i], j)) << "row " << i;
    }
}

TEST(BenchKvCache, KeepRowsCompactsInPlaceAndKeepsCapacity) {
  HostKvCache c(kLayers, kHeads, kDim);
  fill(c, 20);
  const size_t held = c.bytes_held();
  const float* keys_before = c.keys(1, 1);
  const std::vector<int> rows = {0, 1, 2, 5, 9, 10, 19};  // ascending, first rows in place
  c.keep_rows(1, 1, rows);
  expect_rows(c, 1, 1, rows);
  expect_rows(c, 0, 0, std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19});
  EXPECT_EQ(c.keys(1, 1), keys_before) << "same storage: no reallocation";
  EXPECT_EQ(c.bytes_held(), held) << "capacity kept";
}

TEST(BenchKvCache, KeepRowsInAnyOrder) {
  HostKvCache c(kLayers, kHeads, kDim);
  fill(c, 12);
  const std::vector<int> rows = {11, 3, 0, 7, 4};  // the given order, not sorted
  c.keep_rows(0, 1, rows);
  expect_rows(c, 0, 1, rows);
}

// The decode loop: reserve one row, append it, evict one: after the first step nothing is allocated.
TEST(BenchKvCache, DecodeEvictionStopsAllocating) {
  HostKvCache c(kLayers, kHeads, kDim);
  fill(c, 16);
  std::vector<float> k(kDim, 1.0f), v(kDim, 2.0f);
  std::vector<int> keep;
  size_t held_after_first = 0;
  const float* keys_after_first = nullptr;
  for (int step = 0; step < 50; ++step) {
    c.reserve_extra(1);
    for (int l = 0; l < kLayers; ++l)
      for (int h = 0; h < kHeads; ++h) {
        c.append(l, h, k.data(), v.data(), 1, kDim);
        const int n = c.length(l, h);
        keep.clear();
        for (int r = 0; r < n; ++r)
          if (r != n / 2) keep.push_back(r);  // drop a middle row, as an attention-based rule may
        c.keep_rows(l, h, keep);
        ASSERT_EQ(c.length(l, h), 16);
      }
    if (step == 0) {
      held_after_first = c.bytes_held();
      keys_after_first = c.keys(0, 0);
    } else {
      EXPECT_EQ(c.bytes_held(), held_after_first) << "step " << step;
      EXPECT_EQ(c.keys(0, 0), keys_after_first) << "step " << step;
    }
  }
}

TEST(BenchKvCache, ShrinkGivesTheRowsBack) {
  HostKvCache c(kLayers, kHeads, kDim);
  fill(c, 40);
  const size_t row_bytes = kDim * 2 * sizeof(float);
  EXPECT_EQ(c.bytes_held(), c.bytes_used());
  const std::vector<int> rows = {1, 3, 30, 39};
  c.keep_rows(0, 0, rows);
  EXPECT_EQ(c.bytes_held() - c.bytes_used(), 36 * row_bytes) << "kept until asked";
  c.shrink_to_fit(0, 0);
  EXPECT_EQ(c.bytes_held(), c.bytes_used());
  expect_rows(c, 0, 0, rows);
  // A gather (rows out of order) leaves a scratch buffer; shrink_to_fit() of the whole cache drops it.
  c.keep_rows(1, 0, std::vector<int>{5, 2});
  EXPECT_GT(c.bytes_held(), c.bytes_used());
  c.shrink_to_fit();
  EXPECT_EQ(c.bytes_held(), c.bytes_used());
  expect_rows(c, 1, 0, {5, 2});
}

}  // namespace
}  // namespace tappa
