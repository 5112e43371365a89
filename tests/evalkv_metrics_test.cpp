// Scorers on hand-made predictions; expected values computed by hand (the derivation is in each
// comment) from the definitions in RULER's evaluate.py and LongBench's metrics.py.
#include <gtest/gtest.h>

#include "evalkv/fidelity.h"
#include "evalkv/metrics.h"
#include "evalkv/summary.h"
#include "tappa/error.h"

namespace {

using namespace tappa::evalkv;

TEST(EvalKvMetrics, RulerStringMatch) {
  // all: 2 of 3 references are substrings (case-insensitive) → 2/3; part: any → 1.
  EXPECT_DOUBLE_EQ(string_match_all("The numbers are 123 and 456.", {"123", "456", "789"}), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(string_match_part("The numbers are 123 and 456.", {"999", "456"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_part("nothing here", {"999", "456"}), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("  the Apple-Tree\n", {"apple-tree"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("", {"x"}), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("abc", {}), 0.0);
}

TEST(EvalKvMetrics, NormalizeAnswer) {
  // lower → drop punctuation ("an-swer" → "answer", "fox's" → "foxs") → drop articles → collapse spaces
  EXPECT_EQ(normalize_answer("The Quick, brown fox's an-swer!"), "quick brown foxs answer");
  EXPECT_EQ(normalize_answer("theater a  an\tthe"), "theater");
  EXPECT_EQ(normalize_answer("A"), "");
}

TEST(EvalKvMetrics, QaF1) {
  EXPECT_DOUBLE_EQ(qa_f1_score("The cat sat on the mat.", "A cat sat on a mat"), 1.0);
  // pred {paris, is, capital}, gold {paris}: P = 1/3, R = 1 → F1 = 2·(1/3)/(4/3) = 0.5
  EXPECT_DOUBLE_EQ(qa_f1_score("Paris is the capital", "Paris"), 0.5);
  // P = 2/3, R = 1 → 0.8
  EXPECT_NEAR(qa_f1_score("new york city", "New York"), 0.8, 1e-12);
  // repeated words count once per occurrence: pred {a?} ... {b, b, c} vs {b, c, c}: common b:1 c:1 → P=R=2/3
  EXPECT_NEAR(qa_f1_score("b b c", "b c c"), 2.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(qa_f1_score("", "x"), 0.0);
}

TEST(EvalKvMetrics, RougeL) {
  // One sentence each. Distinct words: ref {the,cat,was,on,mat} = 5, hyp {the,cat,sat,on,mat} = 5;
  // LCS "the cat on the mat" → distinct {the,cat,on,mat} = 4; P = R = 0.8 → F = 2PR/(P+R+1e-8) ≈ 0.8.
  EXPECT_NEAR(rouge_l_score("the cat sat on the mat", "the cat was on the mat"), 0.8, 1e-7);
  // Summary level: '.' splits sentences; the union of the per-sentence LCS words covers all 4 words.
  EXPECT_NEAR(rouge_l_score("a b. c d", "a c. b d"), 1.0, 1e-7);
  // No common word → 0; empty prediction → 0 (the rouge package raises, LongBench returns 0).
  EXPECT_DOUBLE_EQ(rouge_l_score("x y", "a b"), 0.0);
  EXPECT_DOUBLE_EQ(rouge_l_score("", "a b"), 0.0);
  EXPECT_DOUBLE_EQ(rouge_l_score("...", "a b"), 0.0);
  // Case matters (no normalisation in LongBench's rouge_score): "The" ≠ "the". ref {the,cat} hyp {The,cat}:
  // LCS {cat} → P = R = 1/2 → 0.5.
  EXPECT_NEAR(rouge_l_score("The cat", "the cat"), 0.5, 1e-7);
}

TEST(EvalKvMetrics, ClassificationRetrievalCount) {
  const std::vector<std::string> classes = {"Location", "Number", "Abbreviation"};
  EXPECT_DOUBLE_EQ(classification_score("Location", "Location", classes), 1.0);
  EXPECT_DOUBLE_EQ(classification_score("Location or Number", "Number", classes), 0.5);
  EXPECT_DOUBLE_EQ(classification_score("Description", "Number", classes), 0.0);
  // LongBench's remove-while-iterating: matched [a, ab, abc]; "a" is removed (in "abc", ≠ it), which
  // skips "ab"; "abc" stays → [ab, abc] → 1/2 (a clean filter would give 1).
  EXPECT_DOUBLE_EQ(classification_score("abc", "abc", {"a", "ab", "abc"}), 0.5);

  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 12", "Paragraph 12"), 1.0);
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 3 and 12", "Paragraph 12"), 0.5);
  EXPECT_DOUBLE_EQ(retrieval_score("none", "Paragraph 12"), 0.0);
  EXPECT_THROW(retrieval_score("1", "no paragraph"), tappa::Error);

  // numbers [7, 7, 10], two equal the gold → 2/3
  EXPECT_DOUBLE_EQ(count_score("There are 7 unique paragraphs, 7 total out of 10", "7"), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(count_score("seven", "7"), 0.0);
}

TEST(EvalKvMetrics, CodeSimAndFuzzRatio) {
  // kitten/sitting: LCS "ittn" = 4, 2·4/13 = 0.6154 → 62 (fuzz.ratio, Indel similarity)
  EXPECT_EQ(fuzz_ratio("kitten", "sitting"), 62);
  // Python rounds half to even: "abcdefgh"/"aijklmno": LCS 1, 2/16 = 12.5 % → 12
  EXPECT_EQ(fuzz_ratio("abcdefgh", "aijklmno"), 12);
  EXPECT_EQ(fuzz_ratio("", ""), 100);
  EXPECT_EQ(fuzz_ratio("a", ""), 0);
  // Characters, not bytes: "é" vs "e" share nothing (2 code points in total) → 0; "éa" vs "ea": LCS 1 of 4 → 50.
  EXPECT_EQ(fuzz_ratio("\xc3\xa9" "a", "ea"), 50);
  // The first line without ` # or // is scored: "return x + 1" equals the gold.
  EXPECT_DOUBLE_EQ(code_sim_score("\n```python\n# comment\nreturn x + 1\n", "return x + 1"), 1.0);
  EXPECT_DOUBLE_EQ(code_sim_score("// only comments", "x"), 0.0);
}

TEST(EvalKvMetrics, LongBenchDispatchAndFirstLineRule) {
  EXPECT_EQ(longbench_metric("multi_news"), "rouge");
  EXPECT_EQ(longbench_metric("hotpotqa_e"), "qa_f1");
  EXPECT_EQ(longbench_metric("lcc"), "code_sim");
  EXPECT_THROW(longbench_metric("dureader"), tappa::Error);
  EXPECT_THROW(longbench_metric("nope"), tappa::Error);
  // max over gold answers: "Paris" scores 1.0 against "Paris", 2/3 against "Paris, France"
  EXPECT_DOUBLE_EQ(score_prediction("qa_f1", "hotpotqa", "Paris", {"Paris, France", "Paris"}, {}), 1.0);
  // trec: only the first non-empty-leading line counts → "Location" → 1.0 (whole text would give 1/2)
  EXPECT_DOUBLE_EQ(score_prediction("classification", "trec", "\nLocation\nNumber", {"Location"}, {"Location", "Number"}),
                   1.0);
  EXPECT_DOUBLE_EQ(score_prediction("classification", "lcc", "Location\nNumber", {"Location"}, {"Location", "Number"}),
                   0.5);
  EXPECT_THROW(score_prediction("bleu", "x", "a", {"a"}, {}), tappa::Error);
}

TEST(EvalKvMetrics, FidelityByHand) {
  FidelityAccumulator acc;
  // full logits (0, 0): p = (½, ½); compressed (ln 3, 0): q = (¾, ¼).
  // KL(p‖q) = ½ ln(½/¾) + ½ ln(½/¼) = ½ ln(4/3) = 0.1438410362; argmax: both 0 (ties → first);
  // NLL of token 1: −ln ¼ = 1.3862943611 (compressed), ln 2 = 0.6931471806 (full).
  const std::vector<float> full = {0.0f, 0.0f}, comp = {static_cast<float>(std::log(3.0)), 0.0f};
  acc.add(full, comp, 1);
  EXPECT_NEAR(acc.kl(), 0.5 * std::log(4.0 / 3.0), 1e-7);  // fp32 ln 3 rounding: ~1e-8
  EXPECT_DOUBLE_EQ(acc.top1(), 1.0);
  EXPECT_NEAR(acc.nll(), std::log(4.0), 1e-7);
  EXPECT_NEAR(acc.nll_full(), std::log(2.0), 1e-12);
  // Identical rows: KL exactly 0; a different argmax halves the top-1 rate.
  acc.add(comp, comp, 0);
  EXPECT_NEAR(acc.kl(), 0.25 * std::log(4.0 / 3.0), 1e-7);
  const std::vector<float> flipped = {0.0f, 1.0f};
  acc.add(comp, flipped, 0);
  EXPECT_NEAR(acc.top1(), 2.0 / 3.0, 1e-12);
  EXPECT_THROW(acc.add(full, std::vector<float>{0.0f}, 0), tappa::Error);
  EXPECT_THROW(acc.add(full, comp, 5), tappa::Error);
  const int32_t a[] = {1, 2, 3, 4}, b[] = {1, 2, 9, 4};
  EXPECT_EQ(agreement_length(a, b), 2);
  EXPECT_EQ(agreement_length(a, a), 4);
}

TEST(EvalKvMetrics, MeanAndStandardError) {
  // {1, 2, 3, 4}: mean 2.5, sd = √(5/3), se = sd/2 = 0.6454972244
  const MeanSe m = mean_se({1, 2, 3, 4});
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_NEAR(m.se, std::sqrt(5.0 / 3.0) / 2.0, 1e-12);
  EXPECT_EQ(mean_se({7}).se, 0.0);
  EXPECT_EQ(mean_se({}).n, 0);
}

}  // namespace
