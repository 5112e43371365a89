// Lists of layer indices as users write them ("3,5,7-9") and as files hold them (prune orders and
// raw-score JSON). Pure parsing: every malformed input is one tappa::Error naming the problem.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tappa::prune {

// "3,5,7-9" → {3,5,7,8,9}, sorted and de-duplicated; "" → {}. Spaces are allowed around items.
// Throws on anything else (negative numbers, reversed ranges, junk), or an index ≥ n_layer when
// n_layer > 0.
std::vector<int> parse_layer_list(std::string_view text, int n_layer = 0);

// "3,5,7,8,9" (compact ranges are not produced, so the output is easy to paste back).
std::string format_layer_list(const std::vector<int>& layers);

// A prune order from a file's text: a JSON object with "order" (tappa prune-order) or
// "prune_order" (the official raw-score files), or a plain list "21 24 23" / "21,24,23". The order
// must be a permutation prefix: distinct non-negative indices. Throws with `what` in the message; also
// for a q-similarity score file (score_type "q_similarity", or "qsim" as tappa wrote it before): its
// prune_order only sorts the q-sims (the official layout), it is not an order to prune by.
std::vector<int> parse_order_text(std::string_view text, std::string_view what = "order");

// The official raw-score file layout (Prune/compute_bi.py, compute_q_similarity.py):
// {"score_type": "BI" | "q_similarity", "scores": [...], "prune_order": the layers by ascending score,
// ties by the lower index}. The caller adds the settings.
enum class RawScoreType { bi, q_similarity };
nlohmann::json raw_score_json(RawScoreType type, const std::vector<double>& scores);

// Per-layer scores from a file's text: a JSON object with "scores" (the official raw-score format),
// or tappa's combined calibration file with `key` ("bi" or "qsim") holding such an object.
std::vector<double> parse_scores_text(std::string_view text, std::string_view key, std::string_view what = "scores");

}  // namespace tappa::prune
