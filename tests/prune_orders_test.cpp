// Prune orders against the official raw scores (PAPER.md §4.5–4.6, committed as
// tests/data/prune/official_raw_scores.json), plus the pure helpers around them.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tappa/error.h"
#include "tappa/prune.h"
#include "test_util.h"

namespace {

using tappa::prune::first_n_sorted;

nlohmann::json official() {
  std::ifstream in(tappa::test::source_dir() + "/tests/data/prune/official_raw_scores.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

TEST(PruneOrders, OfficialTableSetsReproduced) {
  const nlohmann::json d = official();
  int checked = 0;
  for (const auto& [name, m] : d["models"].items()) {
    const auto bi = m["bi"].get<std::vector<double>>();
    const auto q = m["qsim"].get<std::vector<double>>();
    const auto sg = tappa::prune::shortgpt_order(bi);
    const auto tp = tappa::prune::tappa_order(bi, q, m["beta"].get<double>());
    for (const auto& [n_str, sets] : m["table"].items()) {
      const int n = std::stoi(n_str);
      EXPECT_EQ(first_n_sorted(tp, n), sets["tappa"].get<std::vector<int>>()) << name << " TAPPA n=" << n;
      const bool anomaly = m.contains("anomaly") && m["anomaly"]["n"] == n;
      if (anomaly) {
        // PAPER.md §4.5: the table cell does not follow from the raw BI; the raw scores give this set.
        EXPECT_NE(first_n_sorted(sg, n), sets["shortgpt"].get<std::vector<int>>()) << name;
        EXPECT_EQ(first_n_sorted(sg, n), m["anomaly"]["from_raw_scores"].get<std::vector<int>>()) << name;
      } else {
        EXPECT_EQ(first_n_sorted(sg, n), sets["shortgpt"].get<std::vector<int>>()) << name << " ShortGPT n=" << n;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6);
}

TEST(PruneOrders, OfficialOrderPrefixes) {
  const nlohmann::json d = official();
  for (const auto& [name, m] : d["models"].items()) {
    const auto bi = m["bi"].get<std::vector<double>>();
    const auto q = m["qsim"].get<std::vector<double>>();
    const double beta = m["beta"].get<double>();
    const auto tp = tappa::prune::tappa_order(bi, q, beta);
    auto expected = m["tappa_order_prefix"].get<std::vector<int>>();
    std::vector<int> got(tp.begin(), tp.begin() + expected.size());
    if (name == "qwen25_7b") {
      // From the 4-d.p. scores layers 14 and 16 come out swapped (positions 3 and 4): their BI'
      // differ by 4e-6, far below what rounding to 4 d.p. can move a normalised score
      // (0.5e-4 / (max − min) ≈ 6e-5 for BI alone), so the full-precision files decide that pair.
      const auto s = tappa::prune::tappa_scores(bi, q, beta);
      EXPECT_LT(std::abs(s[14] - s[16]), 1e-5);
      EXPECT_EQ(got[3], 14);
      EXPECT_EQ(got[4], 16);
      std::swap(got[3], got[4]);
    }
    EXPECT_EQ(got, expected) << name;
  }
}

TEST(PruneOrders, NormalisationAndTies) {
  const std::vector<double> x = {2.0, 4.0, 3.0};
  EXPECT_EQ(tappa::prune::min_max_normalise(x), (std::vector<double>{0.0, 1.0, 0.5}));
  const std::vector<double> flat = {0.3, 0.3, 0.3};
  EXPECT_EQ(tappa::prune::min_max_normalise(flat), (std::vector<double>{0, 0, 0}));
  // Equal scores keep index order.
  const std::vector<double> tie = {0.5, 0.1, 0.5, 0.1};
  EXPECT_EQ(tappa::prune::ascending_order(tie), (std::vector<int>{1, 3, 0, 2}));
  EXPECT_EQ(tappa::prune::descending_order(tie), (std::vector<int>{0, 2, 1, 3}));
  // High q-sim lowers BI': with equal BI the most self-similar layer goes first.
  const std::vector<double> bi = {0.2, 0.2, 0.4}, q = {0.5, 0.9, 0.1};
  EXPECT_EQ(tappa::prune::tappa_order(bi, q, 0.2).front(), 1);
  EXPECT_THROW(tappa::prune::tappa_scores(bi, std::vector<double>{0.1}, 0.2), tappa::Error);
  EXPECT_THROW(tappa::prune::min_max_normalise(std::vector<double>{}), tappa::Error);
  EXPECT_THROW(tappa::prune::min_max_normalise(std::vector<double>{1.0, NAN}), tappa::Error);
}

TEST(PruneLayerList, ParsesAndRejects) {
  using tappa::prune::parse_layer_list;
  EXPECT_EQ(parse_layer_list("3, 5,7-9,5"), (std::vector<int>{3, 5, 7, 8, 9}));
  EXPECT_TRUE(parse_layer_list("").empty());
  EXPECT_THROW(parse_layer_list("3,x"), tappa::Error);
  EXPECT_THROW(parse_layer_list("9-7"), tappa::Error);
  EXPECT_THROW(parse_layer_list("-1"), tappa::Error);
  EXPECT_THROW(parse_layer_list("30", 30), tappa::Error);
  EXPECT_EQ(tappa::prune::format_layer_list({1, 2, 10}), "1,2,10");
}

TEST(PruneLayerList, OrderAndScoreFiles) {
  using tappa::prune::parse_order_text;
  EXPECT_EQ(parse_order_text("{\"order\": [3, 1, 2]}"), (std::vector<int>{3, 1, 2}));
  EXPECT_EQ(parse_order_text("{\"score_type\":\"bi\",\"prune_order\": [4,0]}"), (std::vector<int>{4, 0}));
  EXPECT_EQ(parse_order_text("21 24,23\n"), (std::vector<int>{21, 24, 23}));
  EXPECT_THROW(parse_order_text("1 1"), tappa::Error);
  EXPECT_THROW(parse_order_text("{\"order\": [\"a\"]}"), tappa::Error);
  EXPECT_THROW(parse_order_text("{oops"), tappa::Error);
  EXPECT_THROW(parse_order_text(""), tappa::Error);
  EXPECT_EQ(tappa::prune::parse_scores_text("{\"scores\": [0.5, 0.25]}", "bi"), (std::vector<double>{0.5, 0.25}));
  EXPECT_EQ(tappa::prune::parse_scores_text("{\"qsim\": {\"scores\": [0.1]}, \"bi\": {\"scores\": [0.2]}}", "qsim"),
            (std::vector<double>{0.1}));
  EXPECT_THROW(tappa::prune::parse_scores_text("{\"scores\": []}", "bi"), tappa::Error);
  EXPECT_THROW(tappa::prune::parse_scores_text("[1,2]", "bi"), tappa::Error);
  EXPECT_EQ(first_n_sorted(std::vector<int>{5, 2, 9}, 2), (std::vector<int>{2, 5}));
  EXPECT_THROW(first_n_sorted(std::vector<int>{5, 2, 9}, 4), tappa::Error);
}

}  // namespace
