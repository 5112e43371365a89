// Zero-shot multiple-choice scoring by log-likelihood (lm-evaluation-harness conventions): each
// choice's continuation is scored under its context; acc picks the highest log-likelihood, acc_norm
// the highest log-likelihood per byte of choice text; ties go to the first choice (numpy argmax).
#pragma once
#include <span>
#include <vector>

#include "eval/mc_tasks.h"
#include "tappa/engine.h"
#include "tappa/tokenizer.h"

namespace tappa::eval {

// Log-likelihood of every choice of the item, in order.
std::vector<double> score_item(Engine& engine, const Tokenizer& tok, const McItem& item);

// Index chosen by acc (norm = false) or acc_norm (norm = true).
int predicted_choice(const McItem& item, std::span<const double> logliks, bool norm);

struct McSummary {
  int n = 0;
  double acc = 0, acc_stderr = 0;
  double acc_norm = 0, acc_norm_stderr = 0;
};

// Accuracy over the scored items (logliks[i] belongs to items[i]); the standard error is lm-eval's:
// sample standard deviation of the 0/1 outcomes over sqrt(n).
McSummary summarise(std::span<const McItem> items, std::span<const std::vector<double>> logliks);

}  // namespace tappa::eval
