// eval-mc scores against a hand computation: for a handful of real items the whole
// context+continuation is run once with all logits, each continuation token's log-probability is
// taken by an explicit log-softmax, and the picks for acc / acc_norm are made by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "eval/loglik.h"
#include "one_sequence.h"
#include "tappa/engine.h"
#include "tappa/eval.h"
#include "tappa/model.h"
#include "test_util.h"

namespace {

using namespace tappa;

using tappa::test::slurp;

// Σ log p(continuation) from one full forward pass, log-softmax written out by hand.
double hand_loglik(test::OneSequence& e, const Tokenizer& tok, const std::string& ctx, const std::string& cont) {
  // lm-eval's split: the context's own tokens, then what the whole string has beyond that count.
  const std::vector<int32_t> whole = tok.encode(ctx + cont, false), c = tok.encode(ctx, false);
  std::vector<int32_t> seq;
  if (tok.add_bos() && tok.bos() >= 0) seq.push_back(tok.bos());
  seq.insert(seq.end(), c.begin(), c.end());
  const size_t n_ctx_tok = seq.size();
  seq.insert(seq.end(), whole.begin() + c.size(), whole.end());
  e.reset();
  const auto logits = e.eval(seq, true);
  const size_t V = logits.size() / seq.size();
  double sum = 0;
  for (size_t p = n_ctx_tok; p < seq.size(); ++p) {
    const float* row = logits.data() + (p - 1) * V;
    double z = 0;
    for (size_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]));
    sum += row[seq[p]] - std::log(z);
  }
  return sum;
}

TEST(EvalMc, HandCheckedItems) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const std::string d = test::data_dir();
  if (!test::exists(d + "/piqa/valid.jsonl")) GTEST_SKIP() << "shared data not found";
  const auto model = Model::load(test::default_model());
  const Tokenizer& tok = model->tokenizer();
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 512;
  test::OneSequence e(*model, eo);

  std::vector<eval::McItem> items;
  auto add = [&](std::vector<eval::McItem> v, size_t n) { items.insert(items.end(), v.begin(), v.begin() + n); };
  add(eval::parse_piqa(slurp(d + "/piqa/valid.jsonl"), slurp(d + "/piqa/valid-labels.lst")), 2);
  add(eval::parse_arc(slurp(d + "/arc/ARC-Easy-Test.jsonl")), 2);
  add(eval::parse_winogrande(slurp(d + "/winogrande/winogrande_dev.llmfoundry.jsonl")), 2);
  add(eval::parse_hellaswag(slurp(d + "/hellaswag/hellaswag_val_full.part0.txt")), 1);

  std::vector<std::vector<double>> scored;
  int hits = 0, hits_norm = 0;
  for (const auto& item : items) {
    const std::vector<double> ll = eval::score_item(e.engine(), tok, item);
    std::vector<double> hand;
    for (const auto& c : item.choices) hand.push_back(hand_loglik(e, tok, c.context, c.continuation));
    ASSERT_EQ(ll.size(), hand.size());
    // The two paths differ only in how the tokens are batched through the matmuls (context and
    // continuation separately vs. one pass) and in the log-sum-exp shift; fp32 rounding of that is
    // ~1e-5 per token, so 2e-3 over a continuation of ≤ 40 tokens is generous and still catches any
    // off-by-one position (which moves a log-likelihood by whole nats).
    for (size_t i = 0; i < ll.size(); ++i) {
      EXPECT_NEAR(ll[i], hand[i], 2e-3) << "choice " << i << ": " << item.choices[i].continuation;
      EXPECT_LT(ll[i], 0.0);
    }
    size_t best = 0, best_norm = 0;
    for (size_t i = 1; i < hand.size(); ++i) {
      if (hand[i] > hand[best]) best = i;
      if (hand[i] / item.choices[i].norm_len > hand[best_norm] / item.choices[best_norm].norm_len) best_norm = i;
    }
    EXPECT_EQ(eval::predicted_choice(item, ll, false), static_cast<int>(best));
    EXPECT_EQ(eval::predicted_choice(item, ll, true), static_cast<int>(best_norm));
    hits += static_cast<int>(best) == item.gold;
    hits_norm += static_cast<int>(best_norm) == item.gold;
    scored.push_back(ll);
  }
  const eval::McSummary s = eval::summarise(items, scored);
  EXPECT_EQ(s.n, static_cast<int>(items.size()));
  EXPECT_DOUBLE_EQ(s.acc, static_cast<double>(hits) / items.size());
  EXPECT_DOUBLE_EQ(s.acc_norm, static_cast<double>(hits_norm) / items.size());
}

TEST(EvalMc, EncodePairMovesTrailingSpace) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const auto model = Model::load(test::default_model());
  const Tokenizer& tok = model->tokenizer();
  const auto a = eval::encode_pair(tok, "Answer: ", "yes");
  const auto b = eval::encode_pair(tok, "Answer:", " yes");
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.continuation, b.continuation);
  std::vector<int32_t> joined = b.context;
  joined.insert(joined.end(), b.continuation.begin(), b.continuation.end());
  std::vector<int32_t> whole = tok.encode("Answer: yes", false);
  if (tok.add_bos() && tok.bos() >= 0) whole.insert(whole.begin(), tok.bos());
  EXPECT_EQ(joined, whole);
}

TEST(EvalMc, SummaryStderr) {
  eval::McItem it;
  it.choices = {{"c", " a", 1}, {"c", " bb", 2}};
  it.gold = 1;
  std::vector<eval::McItem> items(4, it);
  // loglik/len: choice 1 wins acc_norm when -3/2 > -2/1; acc picks choice 0 when -2 > -3.
  const std::vector<std::vector<double>> ll = {{-2, -3}, {-2, -3}, {-5, -3}, {-5, -3}};
  const auto s = eval::summarise(items, ll);
  EXPECT_DOUBLE_EQ(s.acc, 0.5);
  EXPECT_DOUBLE_EQ(s.acc_norm, 1.0);
  EXPECT_NEAR(s.acc_stderr, std::sqrt(0.25 * 4 / 3 / 4), 1e-12);  // sample std of {0,0,1,1} over sqrt(4)
  EXPECT_DOUBLE_EQ(s.acc_norm_stderr, 0.0);
}

}  // namespace
