// Task scorers. Every scorer returns a value in [0, 1] for one prediction (tables print ×100).
//
// RULER (exact match as RULER's evaluate.py does it, case-insensitive substring match after removing
// non-printable characters):
//   string_match_all  = fraction of the gold strings found in the prediction (needles, vt, cwe, passkey)
//   string_match_part = 1 if any gold string is found (RULER's QA tasks)
// LongBench (THUDM/LongBench metrics.py, re-implemented from its published definitions):
//   normalize_answer: lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse spaces
//   qa_f1        token F1 of the normalised strings (bag of words)
//   rouge_l      ROUGE-L F of the `rouge` package as LongBench calls it (summary-level union LCS over
//                '.'-separated sentences of whitespace words, F = 2PR/(P+R))
//   classification  1/|matched classes| when the gold class is among the class names found
//   retrieval    fraction of the numbers in the prediction equal to "Paragraph N"'s N
//   count        fraction of the numbers in the prediction equal to the gold count
//   code_sim     fuzz.ratio (Indel similarity, rounded to an integer percent) of the first line that
//                has no ` # or // against the gold, / 100
// A LongBench sample scores the maximum over its gold answers; for trec/triviaqa/samsum/lsht only the
// first line of the prediction is scored (LongBench's eval.py).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace tappa::evalkv {

double string_match_all(std::string_view prediction, const std::vector<std::string>& refs);
double string_match_part(std::string_view prediction, const std::vector<std::string>& refs);

std::string normalize_answer(std::string_view s);
double qa_f1_score(std::string_view prediction, std::string_view ground_truth);
double rouge_l_score(std::string_view prediction, std::string_view ground_truth);
double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes);
double retrieval_score(std::string_view prediction, std::string_view ground_truth);
double count_score(std::string_view prediction, std::string_view ground_truth);
double code_sim_score(std::string_view prediction, std::string_view ground_truth);
// fuzz.ratio: round(100 · (1 − indel_distance / (|a| + |b|))), 100 for two empty strings. Bytes.
int fuzz_ratio(std::string_view a, std::string_view b);

// The LongBench metric of a data set (dataset2metric), e.g. "multi_news" → "rouge". Throws tappa::Error
// for an unknown data set.
std::string longbench_metric(std::string_view dataset);

// Scores one prediction with `metric` (any of the names above: string_match_all, string_match_part,
// qa_f1, rouge, classification, retrieval, count, code_sim), max over the gold answers; `dataset` picks
// LongBench's first-line rule. Throws tappa::Error for an unknown metric.
double score_prediction(std::string_view metric, std::string_view dataset, std::string_view prediction,
                        const std::vector<std::string>& answers, const std::vector<std::string>& all_classes);

}  // namespace tappa::evalkv
