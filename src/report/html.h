// The HTML report: one self-contained page (inline CSS, every image a base64 data: URI, charts as
// inline SVG, a few lines of inline script only to sort the head table) rendered from the analysis
// result JSON documented in docs/REPORT_SCHEMA.md.
//
// Missing or null fields never make rendering fail: a missing number prints as "—", a missing
// section is left out or says "not available", a PNG that is absent, unreadable, not a PNG or
// outside out_dir becomes a visible placeholder. Numbers printed come from the JSON itself
// (q-similarities, masses and correlations with 3 decimals), so the page's figures are the JSON's.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tappa::report {

// Standard base64 (RFC 4648 §4) with '=' padding.
std::string base64_encode(std::span<const uint8_t> bytes);
std::string base64_encode(std::string_view bytes);
// Accepts padded input, ignores ASCII whitespace; throws tappa::Error on any other malformed input.
std::vector<uint8_t> base64_decode(std::string_view text);
// "data:<mime>;base64,<...>"
std::string data_uri(std::string_view mime, std::span<const uint8_t> bytes);

// One plain sentence that interprets a Spearman correlation between q-similarity (x) and top-k
// stability (y), from its strength, sign and p-value, e.g. "Strong positive correlation: heads whose
// queries stay similar over time have stable top-k attention, as TAPPA predicts. …". Other x/y
// names get a neutral wording.
std::string spearman_sentence(double rho, double p_value, int64_t n, std::string_view x = "qsim_post_last",
                              std::string_view y = "topk_stability");

// The page as a string. PNGs named in the JSON ("maps/L03_H05.png") are read relative to out_dir.
std::string render_report_html(const nlohmann::json& report, const std::string& out_dir);

// Writes out_dir/report.html (creating out_dir if needed) atomically. Throws tappa::Error when the
// file cannot be written.
void write_report(const nlohmann::json& report, const std::string& out_dir);

// Writes out_dir/report.json (indented, atomically), for the analyzer's convenience.
void write_report_json(const nlohmann::json& report, const std::string& out_dir);

}  // namespace tappa::report
