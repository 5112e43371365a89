#include "report/html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "report/atomic_write.h"
#include "report/png.h"
#include "report/svg.h"
#include "tappa/error.h"

namespace tappa::report {

// ---- base64 ---------------------------------------------------------------------------------------

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::span<const uint8_t> in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (const size_t rest = in.size() - i; rest > 0) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (rest == 2 ? uint32_t{in[i + 1]} << 8 : 0u);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  return base64_encode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::vector<uint8_t> base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string clean;
  clean.reserve(text.size());
  for (char c : text)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') clean += c;
  if (clean.size() % 4 != 0) throw Error("base64: length is not a multiple of 4");
  std::vector<uint8_t> out;
  out.reserve(clean.size() / 4 * 3);
  for (size_t i = 0; i < clean.size(); i += 4) {
    const bool last = i + 4 == clean.size();
    int pad = 0;
    int v[4];
    for (int k = 0; k < 4; ++k) {
      const char c = clean[i + k];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) throw Error("base64: data after padding");
      v[k] = value(c);
      if (v[k] < 0) throw Error("base64: invalid character");
    }
    const uint32_t x = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(static_cast<uint8_t>(x >> 16));
    if (pad < 2) out.push_back(static_cast<uint8_t>((x >> 8) & 255));
    if (pad < 1) out.push_back(static_cast<uint8_t>(x & 255));
    // Canonical form: the bits dropped by padding must be zero.
    if ((pad == 1 && (x & 0xff) != 0) || (pad == 2 && (x & 0xffff) != 0))
      throw Error("base64: non-zero bits in padding");
  }
  return out;
}

std::string data_uri(std::string_view mime, std::span<const uint8_t> bytes) {
  return "data:" + std::string(mime) + ";base64," + base64_encode(bytes);
}

// ---- helpers --------------------------------------------------------------------------------------

namespace {

using nlohmann::json;
using svg::escape;
using svg::fixed;

const json& null_json() {
  static const json j;
  return j;
}

const json& at(const json& j, const std::string& key) {
  if (j.is_object()) {
    const auto it = j.find(key);
    if (it != j.end()) return *it;
  }
  return null_json();
}

const json& at(const json& j, size_t index) {
  if (j.is_array() && index < j.size()) return j[index];
  return null_json();
}

double num(const json& j) {
  if (j.is_number()) return j.get<double>();
  return std::numeric_limits<double>::quiet_NaN();
}
double num(const json& j, const std::string& key) { return num(at(j, key)); }

std::optional<int64_t> integer(const json& j) {
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9e15) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}
std::optional<int64_t> integer(const json& j, const std::string& key) { return integer(at(j, key)); }

std::string str(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number() || j.is_boolean()) return j.dump();
  return {};
}
std::string str(const json& j, const std::string& key) { return str(at(j, key)); }

const char* kDash = "\u2014";

// Text of a JSON value for display: integers as integers, other numbers with `decimals`, strings
// escaped, null/missing as a dash, arrays as "[a, b]".
std::string show(const json& j, int decimals = 3) {
  if (j.is_null()) return kDash;
  if (j.is_boolean()) return j.get<bool>() ? "yes" : "no";
  if (j.is_number_integer()) return std::to_string(j.get<int64_t>());
  if (j.is_number()) return fixed(j.get<double>(), decimals);
  if (j.is_string()) return escape(j.get<std::string>());
  if (j.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < j.size(); ++i) s += (i ? ", " : "") + show(j[i], decimals);
    return s + "]";
  }
  return escape(j.dump());
}

// Compact text for values that can be huge (wavelengths, spacings in tokens).
std::string show_compact(const json& j) {
  if (j.is_number_integer() && std::abs(j.get<int64_t>()) < 10000) return std::to_string(j.get<int64_t>());
  if (j.is_number()) return svg::compact(j.get<double>());
  return show(j);
}

std::string pvalue_text(double p) {
  if (!std::isfinite(p)) return kDash;
  if (p >= 0.001) return fixed(p, 3);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", p);
  return buf;
}

std::string label_chip(const std::string& label) {
  if (label.empty()) return kDash;
  const Rgb c = label_color(label);
  // Dark text on light chips.
  const bool light = relative_luminance(c) > 0.45;
  return "<span class=\"chip\" style=\"background:" + to_hex(c) + (light ? ";color:#111827" : "") + "\">" +
         escape(label_display_name(label)) + "</span>";
}

std::string metric_name(std::string_view key) {
  static const std::map<std::string, std::string, std::less<>> kNames = {
      {"qsim_post_last", "q-sim (post-RoPE, last window)"},
      {"qsim_pre_last", "q-sim (pre-RoPE, last window)"},
      {"qsim_pre_sliding", "q-sim (pre-RoPE, sliding windows)"},
      {"qsim_post_sliding", "q-sim (post-RoPE, sliding windows)"},
      {"qsim_lag1", "q-sim lag-1 (consecutive queries)"},
      {"ksim_lag1", "k-sim lag-1 (consecutive keys)"},
      {"topk_stability", "top-k stability"},
      {"topk_predictability", "top-k predictability"},
      {"sink_mass", "sink mass"},
      {"reaccess_mass", "re-access mass"},
      {"diag_mass", "diagonal mass"},
  };
  const auto it = kNames.find(key);
  return it != kNames.end() ? it->second : std::string(key);
}

// Labels present in `counts` (an object label → n) and in `extra`, in canonical order first.
std::vector<std::string> ordered_labels(const json& counts, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> present;
  if (counts.is_object())
    for (auto it = counts.begin(); it != counts.end(); ++it) present.push_back(it.key());
  for (const auto& e : extra)
    if (std::find(present.begin(), present.end(), e) == present.end()) present.push_back(e);
  std::vector<std::string> out;
  for (std::string_view l : pattern_labels())
    if (std::find(present.begin(), present.end(), l) != present.end()) out.emplace_back(l);
  for (const auto& p : present)
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  return out;
}

// A PNG named in the report, read from out_dir; nullopt with a reason when it cannot be used.
struct LoadedImage {
  std::vector<uint8_t> bytes;
  std::string error;
};

LoadedImage load_png(const std::string& out_dir, const std::string& rel) {
  namespace fs = std::filesystem;
  LoadedImage img;
  if (rel.empty()) {
    img.error = "no image";
    return img;
  }
  const fs::path p(rel);
  if (p.is_absolute()) {
    img.error = "absolute path refused";
    return img;
  }
  for (const auto& part : p)
    if (part == "..") {
      img.error = "path outside the report folder refused";
      return img;
    }
  const fs::path full = fs::path(out_dir) / p;
  std::error_code ec;
  const auto size = fs::file_size(full, ec);
  if (ec) {
    img.error = "image not found";
    return img;
  }
  if (size > (uintmax_t{64} << 20)) {
    img.error = "image too large to embed";
    return img;
  }
  std::ifstream f(full, std::ios::binary);
  img.bytes.resize(static_cast<size_t>(size));
  if (!f || !f.read(reinterpret_cast<char*>(img.bytes.data()), static_cast<std::streamsize>(size))) {
    img.bytes.clear();
    img.error = "image unreadable";
    return img;
  }
  if (!png_size(img.bytes)) {
    img.bytes.clear();
    img.error = "not a PNG file";
  }
  return img;
}

std::string image_or_placeholder(const std::string& out_dir, const std::string& rel, const std::string& alt,
                                 const std::string& css_class) {
  const LoadedImage img = load_png(out_dir, rel);
  if (!img.error.empty())
    return "<div class=\"missing\" title=\"" + escape(rel) + "\"><span>" + escape(img.error) + "<br><code>" +
           escape(rel.empty() ? std::string("(none)") : rel) + "</code></span></div>";
  const auto size = png_size(img.bytes);
  return "<img class=\"" + css_class + "\" alt=\"" + escape(alt) + "\" width=\"" + std::to_string(size->first) +
         "\" height=\"" + std::to_string(size->second) + "\" src=\"" + data_uri("image/png", img.bytes) + "\">";
}

// Rows of a two-column key/value table.
std::string kv_row(const std::string& key, const std::string& value_html) {
  return "<tr><th>" + escape(key) + "</th><td>" + value_html + "</td></tr>";
}

// A section's opening: title and "how to read this" paragraph, with an optional figure (e.g. a colour
// bar) to the paragraph's right.
std::string section_open(const std::string& id, const std::string& title, const std::string& how,
                         const std::string& aside = "") {
  std::string s = "<section id=\"" + id + "\"><h2>" + escape(title) + "</h2>";
  const std::string p = how.empty() ? std::string() : "<p class=\"how\"><b>How to read this.</b> " + how + "</p>";
  if (aside.empty()) return s + p;
  return s + "<div class=\"howrow\">" + p + aside + "</div>";
}

struct HeadKey {
  int64_t layer, head;
  auto operator<=>(const HeadKey&) const = default;
};

struct Context {
  const json& r;
  std::string out_dir;
  std::map<HeadKey, const json*> heads;
  int n_layer = 0, n_head = 0;
  std::string xkey = "qsim_post_last", ykey = "topk_stability";
};

const json* find_head(const Context& c, const json& j) {
  const auto l = integer(j, "layer"), h = integer(j, "head");
  if (!l || !h) return nullptr;
  const auto it = c.heads.find({*l, *h});
  return it == c.heads.end() ? nullptr : it->second;
}

// ---- sections ---------------------------------------------------------------------------------------

std::string render_header(const Context& c) {
  const json& m = at(c.r, "model");
  const json& in = at(c.r, "input");
  std::string name = str(m, "name");
  if (name.empty()) name = std::filesystem::path(str(m, "path")).filename().string();
  std::string s = "<header class=\"top\"><div class=\"wrap\"><div class=\"brand\">TAPPA · temporal attention pattern "
                  "predictability analysis</div><h1>Attention report";
  if (!name.empty()) s += " — " + escape(name);
  s += "</h1><p class=\"sub\">";
  std::vector<std::string> bits;
  if (!str(m, "arch").empty()) bits.push_back(escape(str(m, "arch")));
  if (integer(m, "n_layer")) bits.push_back(show(at(m, "n_layer")) + " layers");
  if (integer(m, "n_head")) {
    std::string h = show(at(m, "n_head")) + " heads";
    if (integer(m, "n_head_kv")) h += " (" + show(at(m, "n_head_kv")) + " KV)";
    bits.push_back(h);
  }
  if (integer(in, "n_tokens")) bits.push_back(show(at(in, "n_tokens")) + " tokens analysed");
  if (!str(in, "path").empty()) bits.push_back("input <code>" + escape(str(in, "path")) + "</code>");
  for (size_t i = 0; i < bits.size(); ++i) s += (i ? " · " : "") + bits[i];
  s += "</p></div></header>";
  return s;
}

std::string render_overview(const Context& c) {
  const json& m = at(c.r, "model");
  const json& in = at(c.r, "input");
  const json& st = at(c.r, "settings");
  const json& tm = at(c.r, "timing");
  std::string s = "<section id=\"overview\" class=\"overview\"><div class=\"cards4\">";
  // Model
  s += "<div class=\"card\"><h3>Model</h3><table class=\"kv\">";
  s += kv_row("name", show(at(m, "name")));
  s += kv_row("file", "<code class=\"path\">" + show(at(m, "path")) + "</code>");
  s += kv_row("architecture", show(at(m, "arch")));
  s += kv_row("layers × heads", show(at(m, "n_layer")) + " × " + show(at(m, "n_head")) + " (KV heads " +
                                     show(at(m, "n_head_kv")) + ")");
  s += kv_row("head dim / rotated", show(at(m, "head_dim")) + " / " + show(at(m, "n_rot")));
  s += kv_row("RoPE base", show_compact(at(m, "rope_base")) + " (" + show(at(m, "rope_layout")) + ")");
  if (integer(m, "sliding_window") > 0)  // gemma3: local (sliding-window) layers next to global ones
    s += kv_row("sliding window", show(at(m, "sliding_window")) + " tokens in " + show(at(m, "n_local_layers")) +
                                      " local layers (RoPE base " + show_compact(at(m, "rope_base_local")) + ")");
  s += kv_row("training context", show(at(m, "n_ctx_train")));
  s += "</table></div>";
  // Input
  s += "<div class=\"card\"><h3>Input</h3><table class=\"kv\">";
  s += kv_row("file", "<code class=\"path\">" + show(at(in, "path")) + "</code>");
  s += kv_row("tokens", show(at(in, "n_tokens")));
  s += kv_row("prompt tokens", show(at(in, "n_prompt_tokens")));
  s += kv_row("generated", show(at(in, "n_generated")));
  s += "</table></div>";
  // Settings: every key, as given.
  s += "<div class=\"card\"><h3>Settings</h3><table class=\"kv\">";
  if (st.is_object()) {
    for (auto it = st.begin(); it != st.end(); ++it) {
      std::string v = it.value().is_number_float() ? svg::compact(it.value().get<double>()) : show(it.value());
      if (it.value().is_null()) v = "<span class=\"muted\">none</span>";
      s += kv_row(it.key(), v);
    }
  } else {
    s += kv_row("settings", kDash);
  }
  s += "</table></div>";
  // Timing
  s += "<div class=\"card\"><h3>Timing</h3><table class=\"kv\">";
  auto secs = [&](const char* k) {
    const double v = num(tm, k);
    return std::isfinite(v) ? fixed(v, v < 10 ? 2 : 1) + " s" : std::string(kDash);
  };
  s += kv_row("prefill (with analysis hooks)", secs("prefill_s"));
  s += kv_row("analysis", secs("analysis_s"));
  s += kv_row("total", secs("total_s"));
  if (!at(tm, "plain_prefill_s").is_null()) {
    s += kv_row("plain prefill (no hooks)", secs("plain_prefill_s"));
    const double a = num(tm, "prefill_s"), b = num(tm, "plain_prefill_s");
    if (a > 0 && b > 0) s += kv_row("observer overhead", fixed(a / b, 2) + "×");
  }
  s += "</table></div>";
  s += "</div></section>";
  return s;
}

std::string render_summary(const Context& c) {
  std::string s = section_open(
      "summary", "1. Summary",
      "Every attention head was given one pattern label from its measured attention (re-access/sink, sequential, "
      "periodic sequential, seasonal, unpredictable, or mixed). TAPPA's central claim is that a head's "
      "<i>q-similarity</i> — how alike its queries stay over time — predicts how stable its attention is. The "
      "Spearman rank correlation below tests that claim across all heads: +1 means the most self-similar heads "
      "are exactly the most stable ones.");
  s += "<div class=\"summary\">";
  // Label counts
  const json& counts = at(c.r, "label_counts");
  std::vector<svg::Bar> bars;
  std::string table = "<table class=\"data compact\"><thead><tr><th class=\"l\">label</th><th>heads</th><th>share</th>"
                      "</tr></thead><tbody>";
  int64_t total = 0;
  for (const auto& l : ordered_labels(counts)) total += integer(at(counts, l)).value_or(0);
  for (const auto& l : ordered_labels(counts)) {
    const json& v = at(counts, l);
    bars.push_back({std::string(label_display_name(l)), num(v), to_hex(label_color(l)), ""});
    const auto n = integer(v);
    table += "<tr><td class=\"l\">" + label_chip(l) + "</td><td data-label-count=\"" + escape(l) + "\">" + show(v) +
             "</td><td>" + (n && total > 0 ? fixed(100.0 * static_cast<double>(*n) / static_cast<double>(total), 1) + "%" : kDash) +
             "</td></tr>";
  }
  table += "</tbody></table>";
  svg::ChartOptions bo;
  bo.width = 420;
  bo.horizontal = true;
  bo.show_values = true;
  s += "<div class=\"card\"><h3>Pattern labels</h3>";
  if (bars.empty()) s += "<p class=\"muted\">No label counts in the report.</p>";
  else s += svg::bar_chart(bars, bo) + table;
  s += "</div>";
  // Correlation
  const json& corr = at(c.r, "correlation");
  const double rho = num(corr, "spearman"), p = num(corr, "p_value");
  const int64_t n = integer(corr, "n").value_or(0);
  s += "<div class=\"card corr\"><h3>q-similarity predicts stability?</h3>";
  if (corr.is_object()) {
    s += "<div class=\"big\" data-spearman>ρ = " + fixed(rho, 3) + "</div>";
    s += "<div class=\"muted\">Spearman rank correlation of " + escape(metric_name(c.xkey)) + " with " +
         escape(metric_name(c.ykey)) + " · p = " + pvalue_text(p) + " · n = " + show(at(corr, "n")) + " heads</div>";
    s += "<p class=\"verdict\">" + escape(spearman_sentence(rho, p, n, c.xkey, c.ykey)) + "</p>";
  } else {
    s += "<p class=\"muted\">No correlation in the report.</p>";
  }
  const json& ag = at(c.r, "agreement");
  if (ag.is_object()) {
    const double na = num(ag, "n_agree"), nh = num(ag, "n_heads");
    s += "<h3>Theory vs. measurement</h3><div class=\"big2\">" + show(at(ag, "n_agree")) + " / " +
         show(at(ag, "n_heads")) + "</div><div class=\"muted\">heads whose label predicted from q-/k-similarity and "
         "RoPE channels matches the measured label" +
         (nh > 0 && std::isfinite(na) ? " (" + fixed(100.0 * na / nh, 1) + "%)" : std::string()) + "</div>";
  }
  s += "</div>";
  // Run facts
  const json& in = at(c.r, "input");
  const json& tm = at(c.r, "timing");
  s += "<div class=\"card\"><h3>Run</h3><table class=\"kv\">";
  s += kv_row("heads analysed", c.heads.empty() ? show(at(ag, "n_heads")) : std::to_string(c.heads.size()));
  s += kv_row("tokens", show(at(in, "n_tokens")) + " (" + show(at(in, "n_prompt_tokens")) + " prompt + " +
                            show(at(in, "n_generated")) + " generated)");
  const double total_s = num(tm, "total_s");
  s += kv_row("total time", std::isfinite(total_s) ? fixed(total_s, 2) + " s" : std::string(kDash));
  s += kv_row("tappa version", show(at(c.r, "tappa_version")));
  s += "</table></div>";
  s += "</div></section>";
  return s;
}

std::string render_layers(const Context& c) {
  std::string s = section_open(
      "layers", "2. q-similarity per layer",
      "Each point is the mean over the heads of one layer. <b>Post-RoPE, last window</b>: mean pairwise cosine of "
      "the last queries as the attention sees them (TAPPA's default). <b>Pre-RoPE, sliding</b>: the same on the "
      "raw projected queries, averaged over sliding windows — free of RoPE's rotation, so it isolates content. "
      "<b>Lag-1</b>: cosine of consecutive queries (the paper's wording). The dashed line is lag-1 "
      "<i>key</i> similarity, which TAPPA requires for sequential (diagonal) patterns. High values mean "
      "predictable attention; dips mark layers dominated by retrieval-like heads.");
  const json& layers = at(c.r, "layers");
  if (!layers.is_array() || layers.empty()) return s + "<p class=\"muted\">No per-layer data.</p></section>";
  struct Def {
    const char* key;
    const char* name;
    const char* color;
    bool dashed;
  };
  const Def defs[] = {{"qsim_post_last", "q-sim post-RoPE (last window)", "#4e79a7", false},
                      {"qsim_pre_sliding", "q-sim pre-RoPE (sliding)", "#f28e2b", false},
                      {"qsim_lag1", "q-sim lag-1", "#59a14f", false},
                      {"ksim_lag1", "k-sim lag-1", "#9ca3af", true}};
  std::vector<svg::Series> series;
  for (const Def& d : defs) {
    svg::Series sr;
    sr.name = d.name;
    sr.color = d.color;
    sr.dashed = d.dashed;
    bool any = false;
    for (const json& l : layers) {
      sr.x.push_back(num(l, "layer"));
      sr.y.push_back(num(l, d.key));
      any = any || std::isfinite(sr.y.back());
    }
    if (any) series.push_back(std::move(sr));
  }
  svg::ChartOptions o;
  o.width = 1000;
  o.height = 340;
  o.x_label = "layer";
  o.y_label = "cosine similarity";
  o.x_integer = true;
  s += "<div class=\"figure\">" + svg::line_chart(series, o) + "</div>";
  // The numbers behind the chart.
  s += "<details><summary>Per-layer values</summary><div class=\"tablewrap\"><table class=\"data sortable\"><thead><tr>"
       "<th>layer</th><th>q post last</th><th>q pre last</th><th>q pre sliding</th><th>q post sliding</th>"
       "<th>q lag-1</th><th>k lag-1</th><th class=\"l\">attention</th><th class=\"l\">labels</th></tr></thead><tbody>";
  for (const json& l : layers) {
    s += "<tr class=\"layer-row\"><td data-v=\"" + escape(str(l, "layer")) + "\">" + show(at(l, "layer")) + "</td>";
    for (const char* k : {"qsim_post_last", "qsim_pre_last", "qsim_pre_sliding", "qsim_post_sliding", "qsim_lag1",
                          "ksim_lag1"})
      s += "<td data-v=\"" + escape(str(l, k)) + "\">" + show(at(l, k)) + "</td>";
    // Sliding-window layers only ever see their last `window` keys: the label reads in that light.
    const std::string span = str(l, "attention") == "local" ? "local (window " + str(l, "window") + ")" : "global";
    s += "<td class=\"l\">" + escape(span) + "</td>";
    std::string lc;
    const json& counts = at(l, "label_counts");
    for (const auto& lab : ordered_labels(counts))
      lc += (lc.empty() ? "" : ", ") + escape(label_display_name(lab)) + " " + show(at(counts, lab));
    s += "<td class=\"l\">" + (lc.empty() ? std::string(kDash) : lc) + "</td></tr>";
  }
  s += "</tbody></table></div></details></section>";
  return s;
}

std::string render_maps(const Context& c) {
  std::string s = section_open(
      "maps", "3. Layer × head maps",
      "Rows are layers (0 at the top), columns are query heads. Left: " + escape(metric_name(c.xkey)) +
          " per head, viridis colour scale from the lowest to the highest value in this run (see the colour bar). "
          "Right: the measured pattern label of each head. Hover a cell for its exact values. Bright columns or "
          "bands of one label show where predictable heads concentrate.");
  if (c.n_layer <= 0 || c.n_head <= 0 || int64_t{c.n_layer} * c.n_head > 1'000'000)
    return s + "<p class=\"muted\">No per-head data.</p></section>";
  const int rows = c.n_layer, cols = c.n_head;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> q(static_cast<size_t>(rows) * cols, nan);
  std::vector<int> lab(q.size(), -1);
  std::vector<std::string> qtips(q.size()), ltips(q.size());
  std::vector<std::string> palette_names;
  std::vector<Rgb> palette;
  for (std::string_view l : pattern_labels()) palette_names.emplace_back(l), palette.push_back(label_color(l));
  std::vector<std::string> seen;
  for (const auto& [key, hp] : c.heads) {
    if (key.layer < 0 || key.layer >= rows || key.head < 0 || key.head >= cols) continue;
    const size_t i = static_cast<size_t>(key.layer) * cols + static_cast<size_t>(key.head);
    const json& h = *hp;
    q[i] = static_cast<float>(num(h, c.xkey));
    const std::string label = str(h, "label");
    if (!label.empty()) {
      auto it = std::find(palette_names.begin(), palette_names.end(), label);
      if (it == palette_names.end()) {
        palette_names.push_back(label);
        palette.push_back(label_color(label));
        it = palette_names.end() - 1;
      }
      lab[i] = static_cast<int>(it - palette_names.begin());
      if (std::find(seen.begin(), seen.end(), label) == seen.end()) seen.push_back(label);
    }
    const std::string where = "layer " + std::to_string(key.layer) + ", head " + std::to_string(key.head);
    qtips[i] = where + ": q-sim " + fixed(num(h, c.xkey), 3) + " · " + std::string(label_display_name(label));
    ltips[i] = where + ": " + std::string(label_display_name(label)) + " (predicted " +
               std::string(label_display_name(str(h, "predicted_label"))) + ")";
  }
  const int cell = std::clamp(560 / std::max(rows, cols), 5, 36);
  HeatmapOptions ho;
  ho.cmap = Colormap::Viridis;
  ho.scale = cell;
  svg::GridFigure qf;
  qf.image_data_uri = data_uri("image/png", encode_heatmap_png(q, rows, cols, ho));
  qf.rows = rows, qf.cols = cols, qf.cell_px = cell;
  qf.title = "q-similarity";
  qf.tooltips = std::move(qtips);
  qf.cmap = Colormap::Viridis;
  qf.range = heatmap_range(q, ho);
  qf.colorbar_label = "q-sim";
  svg::GridFigure lf;
  lf.image_data_uri = data_uri("image/png", encode_categorical_png(lab, rows, cols, palette, cell));
  lf.rows = rows, lf.cols = cols, lf.cell_px = cell;
  lf.title = "Pattern label";
  lf.tooltips = std::move(ltips);
  for (const auto& l : ordered_labels(json::object(), seen))
    lf.legend.emplace_back(std::string(label_display_name(l)), to_hex(label_color(l)));
  s += "<div class=\"maps\"><div class=\"figure\">" + svg::grid_figure(qf) + "</div><div class=\"figure\">" +
       svg::grid_figure(lf) + "</div></div></section>";
  return s;
}

std::string metrics_table(const json* h, const json& g) {
  const json& m = h ? at(*h, "metrics") : null_json();
  const json& rope = h ? at(*h, "rope") : null_json();
  std::string s = "<table class=\"kv small\">";
  s += kv_row("q-sim", show(at(g, "qsim")));
  s += kv_row("top-k stability", show(at(m, "topk_stability")));
  s += kv_row("sink / re-access mass", show(at(m, "sink_mass")) + " / " + show(at(m, "reaccess_mass")));
  s += kv_row("diagonal mass", show(at(m, "diag_mass")));
  s += kv_row("best offset (mass)", show(at(m, "best_offset")) + " (" + show(at(m, "best_offset_mass")) + ")");
  s += kv_row("period (strength)", show(at(m, "period")) + " (" + show(at(m, "period_strength")) + ")");
  s += kv_row("dominant RoPE channel", show(at(rope, "dominant_channel")) + " · dominance " +
                                           show(at(rope, "dominance")) + " · " + show(at(rope, "frequency_class")));
  s += kv_row("wavelength / predicted spacing",
              show_compact(at(rope, "wavelength")) + " / " + show_compact(at(rope, "predicted_spacing")) + " tokens");
  if (h) {
    const json& agree = at(*h, "prediction_agrees");
    s += kv_row("predicted label", label_chip(str(*h, "predicted_label")) +
                                       (agree.is_boolean() ? (agree.get<bool>() ? " <span class=\"ok\">✓ agrees</span>"
                                                                                : " <span class=\"bad\">✗ differs</span>")
                                                           : std::string()));
  }
  return s + "</table>";
}

std::string render_map_style(const Context& c) {
  const json& ms = at(c.r, "map_style");
  if (!ms.is_object()) return {};
  const auto cmap = parse_colormap(str(ms, "colormap")).value_or(Colormap::Magma);
  HeatmapRange r;
  r.log_scale = at(ms, "log_scale").is_boolean() && at(ms, "log_scale").get<bool>();
  r.log_floor = std::isfinite(num(ms, "log_floor")) && num(ms, "log_floor") > 0 ? num(ms, "log_floor") : 1e-6;
  r.lo = std::isfinite(num(ms, "vmin")) ? num(ms, "vmin") : (r.log_scale ? r.log_floor : 0.0);
  r.hi = std::isfinite(num(ms, "vmax")) ? num(ms, "vmax") : 1.0;
  return "<div class=\"cbar\">" + svg::colorbar(cmap, r, 150, "attention weight") + "</div>";
}

std::string render_gallery(const Context& c) {
  std::string s = section_open(
      "gallery", "4. Gallery of attention maps",
      "Each card is one head chosen to illustrate a pattern (the reason is given under its title). In the maps, "
      "rows are query positions (time runs downwards) and columns are key positions; bright = more attention. "
      "The left map is the whole sequence, shrunk by keeping the maximum of each block so thin lines survive; "
      "the right map zooms on the last queries. Vertical lines are re-access (the first column: an attention "
      "sink), diagonals are sequential, parallel diagonals are periodic sequential with the spacing the "
      "dominant RoPE channel predicts, scattered dots are unpredictable.",
      render_map_style(c));
  const json& gallery = at(c.r, "gallery");
  if (!gallery.is_array() || gallery.empty()) return s + "<p class=\"muted\">No gallery entries.</p></section>";
  s += "<div class=\"gallery\">";
  for (const json& g : gallery) {
    const json* h = find_head(c, g);
    const std::string label = str(g, "label");
    const std::string title = "Layer " + show(at(g, "layer")) + " · Head " + show(at(g, "head"));
    s += "<div class=\"gcard\" id=\"g-L" + str(g, "layer") + "-H" + str(g, "head") + "\">";
    s += "<div class=\"ghead\">" + label_chip(label) + " <b>" + title + "</b>";
    if (h && !at(*h, "kv_head").is_null()) s += " <span class=\"muted\">KV head " + show(at(*h, "kv_head")) + "</span>";
    if (h && str(*h, "attention") == "local")
      s += " <span class=\"muted\">sliding window " + show(at(*h, "window")) + "</span>";
    s += "<span class=\"gq\">q-sim <b>" + show(at(g, "qsim")) + "</b></span></div>";
    if (!str(g, "why").empty()) s += "<div class=\"why\">" + escape(str(g, "why")) + "</div>";
    s += "<div class=\"gimgs\"><figure>" + image_or_placeholder(c.out_dir, str(g, "png"), title + " full map", "gimg") +
         "<figcaption>whole sequence (cell means)</figcaption></figure><figure>" +
         image_or_placeholder(c.out_dir, str(g, "zoom_png"), title + " zoom", "gimg") +
         "<figcaption>zoom on the last queries</figcaption></figure></div>";
    s += metrics_table(h, g);
    if (h && !str(*h, "evidence").empty()) s += "<p class=\"evidence\">" + escape(str(*h, "evidence")) + "</p>";
    s += "</div>";
  }
  s += "</div></section>";
  return s;
}

std::string render_rope(const Context& c) {
  std::string s = section_open(
      "rope", "5. RoPE channel energy",
      "RoPE rotates each pair of head dimensions (a <i>channel</i> m) at its own speed; low m turn fast, high m "
      "turn slowly. The bars are each channel's share of the query·key energy for the gallery heads. When one "
      "channel dominates (highlighted, dashed line), TAPPA predicts its wavelength sets the pattern: a short "
      "wavelength gives diagonals repeating at that spacing, a wavelength longer than the context gives "
      "vertical re-access lines.");
  const json& gallery = at(c.r, "gallery");
  std::vector<const json*> hs;
  if (gallery.is_array())
    for (const json& g : gallery)
      if (const json* h = find_head(c, g); h && std::find(hs.begin(), hs.end(), h) == hs.end()) hs.push_back(h);
  int drawn = 0;
  std::string grid = "<div class=\"ropegrid\">";
  for (const json* hp : hs) {
    const json& h = *hp;
    const json& rope = at(h, "rope");
    const json& energy = at(rope, "channel_energy");
    if (!energy.is_array() || energy.empty()) continue;
    const auto dom = integer(rope, "dominant_channel");
    const std::string label = str(h, "label");
    std::vector<svg::Bar> bars;
    for (size_t i = 0; i < energy.size(); ++i) {
      const bool is_dom = dom && static_cast<int64_t>(i) == *dom;
      bars.push_back({std::to_string(i), num(energy[i]), is_dom ? to_hex(label_color(label)) : "#cbd5e1",
                      "channel " + std::to_string(i) + ": " + fixed(num(energy[i]), 4)});
    }
    svg::ChartOptions o;
    o.width = 560;
    o.height = 230;
    o.title = "Layer " + show(at(h, "layer")) + " · Head " + show(at(h, "head")) + " — " +
              std::string(label_display_name(label));
    o.x_label = "RoPE channel m";
    o.y_label = "energy";
    if (dom)
      o.vlines.push_back({static_cast<double>(*dom),
                          "m* = " + std::to_string(*dom) + " · λ = " + show_compact(at(rope, "wavelength")) + " tokens",
                          "#111827"});
    o.annotation = "dominance " + show(at(rope, "dominance")) + " · " + str(rope, "frequency_class") +
                   " frequency · spacing " + show_compact(at(rope, "predicted_spacing"));
    grid += "<div class=\"figure\">" + svg::bar_chart(bars, o) + "</div>";
    ++drawn;
  }
  grid += "</div>";
  if (drawn == 0) return s + "<p class=\"muted\">No channel energies for the gallery heads.</p></section>";
  return s + grid + "</section>";
}

std::string render_scatter(const Context& c) {
  const json& corr = at(c.r, "correlation");
  std::string s = section_open(
      "scatter", "6. q-similarity vs. top-k stability",
      "One point per head, coloured by its measured label. If TAPPA is right, points rise from left to right: "
      "heads whose queries stay similar (right) keep attending to the same keys (top). Unpredictable heads "
      "should gather at the lower left.");
  if (!corr.is_object()) return s + "<p class=\"muted\">No correlation data.</p></section>";
  std::vector<svg::Point> pts;
  const json& points = at(corr, "points");
  if (points.is_array())
    for (const json& p : points) {
      svg::Point pt;
      pt.x = num(at(p, 0));
      pt.y = num(at(p, 1));
      pt.category = str(at(p, 2));
      pts.push_back(std::move(pt));
    }
  svg::ChartOptions o;
  o.width = 820;
  o.height = 460;
  o.title = "Spearman ρ = " + fixed(num(corr, "spearman"), 3) + " (p = " + pvalue_text(num(corr, "p_value")) +
            ", n = " + show(at(corr, "n")) + ")";
  o.x_label = metric_name(c.xkey);
  o.y_label = metric_name(c.ykey);
  s += "<div class=\"figure\">" + svg::scatter_plot(pts, o) + "</div>";
  s += "<p class=\"verdict\">" +
       escape(spearman_sentence(num(corr, "spearman"), num(corr, "p_value"), integer(corr, "n").value_or(0), c.xkey,
                                c.ykey)) +
       "</p>";
  // Every q-similarity variant against both measures, when the analyzer provides them.
  const json& table = at(corr, "table");
  if (table.is_array() && !table.empty()) {
    s += "<table class=\"data\"><thead><tr><th>q-similarity</th><th>measure</th><th>Spearman ρ</th><th>p</th>"
         "<th>n</th></tr></thead><tbody>";
    for (const json& row : table)
      s += "<tr><td>" + escape(metric_name(str(row, "x"))) + "</td><td>" + escape(metric_name(str(row, "y"))) +
           "</td><td>" + fixed(num(row, "spearman"), 3) + "</td><td>" + pvalue_text(num(row, "p_value")) + "</td><td>" +
           show(at(row, "n")) + "</td></tr>";
    s += "</tbody></table><p class=\"muted\">Stability: Jaccard overlap of the top-k keys of consecutive queries. "
         "Predictability: share of the next top-k keys that the current step foresees as the same key or the same "
         "relative offset (a clean diagonal is predictable but not stable).</p>";
  }
  s += "</section>";
  return s;
}

std::string render_agreement(const Context& c) {
  std::string s = section_open(
      "agreement", "7. Prediction agreement",
      "TAPPA's theory predicts each head's pattern from quantities that do not look at attention at all: "
      "q-similarity, k-similarity and the dominant RoPE channel's frequency. The table compares that prediction "
      "with the label measured from the attention maps; the matrix shows where they disagree (rows: measured, "
      "columns: predicted; the diagonal is agreement).");
  const json& ag = at(c.r, "agreement");
  if (ag.is_object()) {
    s += "<p class=\"lead\"><b>" + show(at(ag, "n_agree")) + "</b> of <b>" + show(at(ag, "n_heads")) +
         "</b> heads agree";
    const double na = num(ag, "n_agree"), nh = num(ag, "n_heads");
    if (nh > 0 && std::isfinite(na)) s += " (" + fixed(100.0 * na / nh, 1) + "%)";
    s += ".</p>";
    const json& by = at(ag, "by_label");
    s += "<div class=\"agree\"><table class=\"data\"><thead><tr><th class=\"l\">measured label</th><th>heads</th>"
         "<th>agree</th><th>rate</th><th class=\"l\"></th></tr></thead><tbody>";
    for (const auto& l : ordered_labels(by)) {
      const json& e = at(by, l);
      const double n = num(e, "n"), a = num(e, "agree");
      const double rate = n > 0 ? a / n : std::numeric_limits<double>::quiet_NaN();
      s += "<tr class=\"agree-row\"><td class=\"l\">" + label_chip(l) + "</td><td data-agree-n=\"" + escape(l) + "\">" +
           show(at(e, "n")) + "</td><td data-agree=\"" + escape(l) + "\">" + show(at(e, "agree")) + "</td><td>" +
           (std::isfinite(rate) ? fixed(100 * rate, 1) + "%" : std::string(kDash)) +
           "</td><td class=\"l\"><div class=\"meter\"><div style=\"width:" +
           (std::isfinite(rate) ? fixed(100 * rate, 1) : std::string("0")) + "%;background:" +
           to_hex(label_color(l)) + "\"></div></div></td></tr>";
    }
    s += "</tbody></table>";
  } else {
    s += "<div class=\"agree\"><p class=\"muted\">No agreement summary in the report.</p>";
  }
  // Confusion matrix from the heads.
  std::map<std::pair<std::string, std::string>, int> cm;
  std::vector<std::string> meas, pred;
  for (const auto& [k, hp] : c.heads) {
    const std::string a = str(*hp, "label"), b = str(*hp, "predicted_label");
    if (a.empty() || b.empty()) continue;
    ++cm[{a, b}];
    meas.push_back(a);
    pred.push_back(b);
  }
  if (!cm.empty()) {
    std::vector<std::string> all = meas;
    all.insert(all.end(), pred.begin(), pred.end());
    const std::vector<std::string> order = ordered_labels(json::object(), all);
    std::vector<std::string> rows_l, cols_l;
    for (const auto& l : order) {
      if (std::find(meas.begin(), meas.end(), l) != meas.end()) rows_l.push_back(l);
      if (std::find(pred.begin(), pred.end(), l) != pred.end()) cols_l.push_back(l);
    }
    int maxv = 1;
    for (const auto& [k, v] : cm) maxv = std::max(maxv, v);
    s += "<table class=\"data confusion\"><thead><tr><th class=\"l\">measured ↓ / predicted →</th>";
    for (const auto& l : cols_l) s += "<th>" + escape(label_display_name(l)) + "</th>";
    s += "<th>total</th></tr></thead><tbody>";
    for (const auto& r : rows_l) {
      s += "<tr><td class=\"l\">" + label_chip(r) + "</td>";
      int tot = 0;
      for (const auto& col : cols_l) {
        const auto it = cm.find({r, col});
        const int v = it == cm.end() ? 0 : it->second;
        tot += v;
        const double a = v == 0 ? 0.0 : 0.12 + 0.6 * v / maxv;
        s += "<td class=\"cm" + std::string(r == col ? " diag" : "") + "\" style=\"background:rgba(" +
             (r == col ? "5,150,105," : "220,38,38,") + fixed(a, 2) + ")\">" + (v ? std::to_string(v) : "·") + "</td>";
      }
      s += "<td>" + std::to_string(tot) + "</td></tr>";
    }
    s += "</tbody></table>";
  }
  s += "</div></section>";
  return s;
}

std::string render_intervention(const Context& c) {
  const json& iv = at(c.r, "intervention");
  if (!iv.is_object()) return {};
  const std::string kind = str(iv, "kind");
  const json& st = at(c.r, "settings");
  std::string what;
  if (kind == "rope_base") {
    what = "The RoPE base was changed from <b>" + show_compact(at(at(c.r, "model"), "rope_base")) + "</b> to <b>" +
           show_compact(at(st, "rope_base_override")) + "</b>. TAPPA predicts that diagonal spacings follow the "
           "dominant channel's wavelength 2π·base<sup>2m/d</sup>: a smaller base gives shorter spacings.";
  } else if (kind == "channel_swap") {
    const json& sw = at(st, "channel_swap");
    what = "RoPE channel <b>" + show(at(sw, 0)) + "</b> was swapped with channel <b>" + show(at(sw, 1)) +
           "</b>, moving the dominant energy to a channel of another frequency. TAPPA predicts that periodic "
           "diagonals appear (or change spacing) as the new channel's wavelength dictates.";
  } else {
    what = "Intervention <b>" + escape(kind) + "</b>.";
  }
  std::string s = section_open("intervention", "8. Intervention",
                               what + " Below: baseline (before) against this run (after).");
  const json& base = at(iv, "baseline");
  // Per-layer q-sim before / after.
  const json& bl = at(base, "layers");
  const json& layers = at(c.r, "layers");
  svg::Series before, after;
  before.name = "before (baseline)";
  before.color = "#9ca3af";
  before.dashed = true;
  after.name = "after";
  after.color = "#4e79a7";
  if (bl.is_array())
    for (size_t i = 0; i < bl.size(); ++i) {
      const json& e = bl[i];
      if (e.is_number()) {
        before.x.push_back(static_cast<double>(i));
        before.y.push_back(num(e));
      } else {
        const double l = num(e, "layer");
        before.x.push_back(std::isfinite(l) ? l : static_cast<double>(i));
        before.y.push_back(num(e, c.xkey));
      }
    }
  if (layers.is_array())
    for (const json& l : layers) after.x.push_back(num(l, "layer")), after.y.push_back(num(l, c.xkey));
  std::vector<svg::Series> ser = {before, after};
  svg::ChartOptions o;
  o.width = 1000;
  o.height = 300;
  o.title = metric_name(c.xkey) + " per layer";
  o.x_label = "layer";
  o.y_label = "cosine similarity";
  o.x_integer = true;
  s += "<div class=\"figure\">" + svg::line_chart(ser, o) + "</div>";
  // Label counts before / after.
  const json& lb = at(base, "label_counts");
  const json& la = at(c.r, "label_counts");
  std::vector<std::string> keys;
  for (const auto& l : ordered_labels(lb)) keys.push_back(l);
  const std::vector<std::string> labels = ordered_labels(la, keys);
  s += "<div class=\"two\"><div><h3>Label counts</h3><table class=\"data\"><thead><tr><th class=\"l\">label</th>"
       "<th>before</th><th>after</th><th>change</th></tr></thead><tbody>";
  for (const auto& l : labels) {
    const auto b = integer(at(lb, l)).value_or(0), a = integer(at(la, l)).value_or(0);
    const int64_t d = a - b;
    s += "<tr><td class=\"l\">" + label_chip(l) + "</td><td data-before=\"" + escape(l) + "\">" + std::to_string(b) +
         "</td><td data-after=\"" + escape(l) + "\">" + std::to_string(a) + "</td><td class=\"" +
         (d > 0 ? "up" : d < 0 ? "down" : "") + "\">" + (d > 0 ? "+" : "") + std::to_string(d) + "</td></tr>";
  }
  s += "</tbody></table></div>";
  // Changed heads.
  const json& changed = at(iv, "changed");
  s += "<div><h3>Heads that changed (" + std::to_string(changed.is_array() ? changed.size() : 0) + ")</h3>";
  if (changed.is_array() && !changed.empty()) {
    s += "<div class=\"tablewrap short\"><table class=\"data sortable\"><thead><tr><th>layer</th><th>head</th>"
         "<th class=\"l\">label before</th><th class=\"l\">label after</th><th>spacing before</th>"
         "<th>spacing after</th><th>ratio</th></tr></thead><tbody>";
    for (const json& e : changed) {
      const double sb = num(e, "spacing_before"), sa = num(e, "spacing_after");
      s += "<tr class=\"changed-row\"><td data-v=\"" + escape(str(e, "layer")) + "\">" + show(at(e, "layer")) +
           "</td><td data-v=\"" + escape(str(e, "head")) + "\">" + show(at(e, "head")) + "</td><td class=\"l\" data-v=\"" +
           escape(str(e, "label_before")) + "\">" + label_chip(str(e, "label_before")) + "</td><td class=\"l\" data-v=\"" +
           escape(str(e, "label_after")) + "\">" + label_chip(str(e, "label_after")) + "</td><td data-v=\"" +
           str(e, "spacing_before") + "\">" + show_compact(at(e, "spacing_before")) + "</td><td data-v=\"" +
           str(e, "spacing_after") + "\">" + show_compact(at(e, "spacing_after")) + "</td><td>" +
           (sb > 0 && std::isfinite(sa) ? svg::compact(sa / sb) : std::string(kDash)) + "</td></tr>";
    }
    s += "</tbody></table></div>";
  } else {
    s += "<p class=\"muted\">No head changed its label.</p>";
  }
  s += "</div></div></section>";
  return s;
}

std::string render_head_table(const Context& c) {
  std::string s = section_open(
      "heads", "9. All heads",
      "Every head with its label, the predicted label, all q-similarity variants, the attention metrics and "
      "the dominant RoPE channel. Click a column header to sort (again to reverse). Masses are fractions of "
      "attention: sink = on the first token, re-access = on the most re-visited keys, diagonal = within the "
      "best diagonal band.");
  if (c.heads.empty()) return s + "<p class=\"muted\">No heads.</p></section>";
  struct Col {
    const char* title;
    const char* group;  // "" top level, "metrics", "rope"
    const char* key;
    int kind;  // 0 number(3), 1 integer-ish, 2 compact, 3 label chip, 4 text, 5 bool
  };
  const Col cols[] = {{"layer", "", "layer", 1},
                      {"head", "", "head", 1},
                      {"kv", "", "kv_head", 1},
                      {"attention", "", "attention", 4},
                      {"label", "", "label", 3},
                      {"predicted", "", "predicted_label", 3},
                      {"agree", "", "prediction_agrees", 5},
                      {"q post last", "", "qsim_post_last", 0},
                      {"q pre last", "", "qsim_pre_last", 0},
                      {"q pre slid.", "", "qsim_pre_sliding", 0},
                      {"q post slid.", "", "qsim_post_sliding", 0},
                      {"q lag-1", "", "qsim_lag1", 0},
                      {"k lag-1", "", "ksim_lag1", 0},
                      {"top-k stab.", "metrics", "topk_stability", 0},
                      {"sink", "metrics", "sink_mass", 0},
                      {"re-access", "metrics", "reaccess_mass", 0},
                      {"diag", "metrics", "diag_mass", 0},
                      {"best off.", "metrics", "best_offset", 1},
                      {"period", "metrics", "period", 1},
                      {"dom. ch.", "rope", "dominant_channel", 1},
                      {"dominance", "rope", "dominance", 0},
                      {"spacing", "rope", "predicted_spacing", 2},
                      {"freq.", "rope", "frequency_class", 4}};
  s += "<div class=\"tablewrap tall\"><table class=\"data sortable heads\"><thead><tr>";
  for (const Col& col : cols)
    s += std::string("<th") + (col.kind >= 3 && col.kind != 5 ? " class=\"l\"" : "") + " title=\"" +
         escape(metric_name(col.key)) + "\">" + escape(col.title) + "</th>";
  s += "</tr></thead><tbody>";
  for (const auto& [key, hp] : c.heads) {
    const json& h = *hp;
    s += "<tr class=\"head-row\" data-layer=\"" + std::to_string(key.layer) + "\" data-head=\"" +
         std::to_string(key.head) + "\">";
    for (const Col& col : cols) {
      const json& src = *col.group ? at(h, col.group) : h;
      const json& v = at(src, col.key);
      switch (col.kind) {
        case 0:
          s += "<td data-v=\"" + escape(str(v)) + "\">" + show(v) + "</td>";
          break;
        case 1:
          s += "<td data-v=\"" + escape(str(v)) + "\">" + show(v, 1) + "</td>";
          break;
        case 2:
          s += "<td data-v=\"" + escape(str(v)) + "\">" + show_compact(v) + "</td>";
          break;
        case 3:
          s += "<td class=\"l\" data-v=\"" + escape(str(v)) + "\">" + label_chip(str(v)) + "</td>";
          break;
        case 4:
          s += "<td class=\"l\" data-v=\"" + escape(str(v)) + "\">" + show(v) + "</td>";
          break;
        case 5:
          s += "<td data-v=\"" + std::string(v.is_boolean() ? (v.get<bool>() ? "1" : "0") : "") + "\">" +
               (v.is_boolean() ? (v.get<bool>() ? "<span class=\"ok\">✓</span>" : "<span class=\"bad\">✗</span>")
                               : std::string(kDash)) +
               "</td>";
          break;
      }
    }
    s += "</tr>";
  }
  s += "</tbody></table></div></section>";
  return s;
}

constexpr const char* kCss = R"css(
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f4f6f9;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
.wrap{max-width:1280px;margin:0 auto;padding:0 28px}
header.top{background:linear-gradient(135deg,#0f172a,#1e3a5f);color:#f8fafc;padding:26px 0 22px}
header .brand{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:#93c5fd;margin-bottom:4px}
h1{font-size:28px;margin:0 0 6px;font-weight:650;letter-spacing:-.01em}
header .sub{margin:0;color:#cbd5e1}
header code{color:#e2e8f0;background:rgba(255,255,255,.08);padding:1px 5px;border-radius:4px}
nav.toc{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.94);backdrop-filter:blur(6px);border-bottom:1px solid var(--line)}
nav.toc .wrap{display:flex;flex-wrap:wrap;gap:4px 18px;padding-top:9px;padding-bottom:9px;font-size:14px}
nav.toc a{color:#334155;text-decoration:none}
nav.toc a:hover{color:var(--accent)}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:22px 26px;margin:22px 0;box-shadow:0 1px 3px rgba(15,23,42,.05)}
section.overview{background:none;border:none;box-shadow:none;padding:0}
h2{font-size:20px;margin:0 0 6px;font-weight:650}
h3{font-size:13px;margin:0 0 8px;text-transform:uppercase;letter-spacing:.06em;color:#475569;font-weight:650}
p.how{color:#4b5563;font-size:14px;max-width:980px;margin:0 0 16px}
p.how b{color:#374151}
.muted{color:var(--muted)}
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code.path{word-break:break-all}
.cards4{display:grid;grid-template-columns:repeat(auto-fit,minmax(270px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
table.kv{border-collapse:collapse;font-size:13.5px;width:100%}
table.kv th{font-weight:500;color:var(--muted);text-align:left;padding:3px 10px 3px 0;vertical-align:top;white-space:nowrap}
table.kv td{padding:3px 0;font-variant-numeric:tabular-nums}
table.kv.small{font-size:13px;margin-top:10px}
.summary{display:grid;grid-template-columns:minmax(380px,1.1fr) minmax(320px,1fr) minmax(260px,.8fr);gap:16px;align-items:start}
@media (max-width:1100px){.summary{grid-template-columns:1fr}}
.big{font-size:34px;font-weight:680;letter-spacing:-.01em;margin:4px 0 2px}
.big2{font-size:26px;font-weight:650;margin:2px 0}
.corr h3+.big{margin-top:0}
.corr h3:not(:first-child){margin-top:18px}
p.verdict{background:#f0f9ff;border-left:4px solid #0ea5e9;padding:10px 14px;border-radius:0 8px 8px 0;margin:12px 0 0;font-size:14.5px}
p.lead{font-size:16px;margin:0 0 12px}
.chip{display:inline-block;padding:1px 9px;border-radius:999px;color:#fff;font-size:12px;font-weight:600;white-space:nowrap;line-height:1.6}
table.data{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
table.data th{background:#f1f5f9;color:#334155;font-weight:600;text-align:right;padding:6px 9px;border-bottom:1px solid #cbd5e1;white-space:nowrap;position:sticky;top:0;z-index:1}
table.data td{text-align:right;padding:4px 9px;border-bottom:1px solid #eef2f7;white-space:nowrap}
table.data .l{text-align:left}
table.data tbody tr:hover td{background:#f8fafc}
table.data.compact{margin-top:8px;width:100%}
table.heads{font-size:12.5px}
table.heads td,table.heads th{padding:3px 7px}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{color:var(--accent)}
table.sortable th.asc::after{content:" \25B2";font-size:9px}
table.sortable th.desc::after{content:" \25BC";font-size:9px}
.tablewrap{overflow:auto;border:1px solid var(--line);border-radius:8px;max-height:420px}
.tablewrap.tall{max-height:720px}
.tablewrap.short{max-height:360px}
details{margin-top:12px}
details summary{cursor:pointer;color:#334155;font-weight:600;font-size:14px;margin-bottom:8px}
.figure{overflow-x:auto}
svg{max-width:100%;height:auto;display:block}
.maps{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:18px}
.gcard{border:1px solid var(--line);border-radius:10px;padding:14px 16px;background:#fff}
.ghead{display:flex;align-items:center;gap:8px;font-size:15px;flex-wrap:wrap}
.ghead .gq{margin-left:auto;color:var(--muted);font-size:13.5px}
.ghead .gq b{color:var(--ink)}
.why{color:#4b5563;font-size:13.5px;margin:4px 0 10px;font-style:italic}
.gimgs{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.gimgs figure{margin:0}
.gimgs img{width:100%;height:auto;aspect-ratio:1/1;object-fit:contain;image-rendering:pixelated;border:1px solid #d1d5db;border-radius:4px;background:#000;display:block}
figcaption{font-size:12px;color:var(--muted);text-align:center;margin-top:3px}
.missing{display:flex;align-items:center;justify-content:center;aspect-ratio:1/1;background:repeating-linear-gradient(45deg,#f9fafb 0 10px,#eef0f3 10px 20px);color:#b91c1c;border:1px dashed #9ca3af;border-radius:4px;font-size:13px;text-align:center;padding:10px}
.missing code{color:#6b7280;word-break:break-all}
.evidence{font-size:13px;color:#374151;background:#f9fafb;border-radius:6px;padding:8px 10px;margin:10px 0 0}
.howrow{display:flex;gap:24px;align-items:flex-start;justify-content:space-between}
.howrow .cbar{flex:none;margin-top:-6px}
.ropegrid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px 22px}
.ok{color:#047857;font-weight:600}
.bad{color:#b91c1c;font-weight:600}
.up{color:#047857}
.down{color:#b91c1c}
.agree{display:flex;flex-wrap:wrap;gap:32px;align-items:flex-start}
.meter{width:120px;height:9px;background:#eef2f7;border-radius:5px;overflow:hidden}
.meter div{height:100%}
table.confusion td.cm{text-align:center;min-width:64px}
table.confusion td.diag{font-weight:700}
.two{display:grid;grid-template-columns:minmax(300px,.8fr) minmax(400px,1.2fr);gap:28px;margin-top:10px}
@media (max-width:900px){.two{grid-template-columns:1fr}}
footer{color:var(--muted);font-size:12.5px;padding:10px 0 40px}
@media print{nav.toc{display:none}section{break-inside:avoid-page}}
)css";

constexpr const char* kScript = R"js(
(function(){
  function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent.trim():v;}
  var tables=document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables,function(t){
    var ths=t.tHead?t.tHead.rows[0].cells:[];
    Array.prototype.forEach.call(ths,function(th,i){
      th.addEventListener('click',function(){
        var asc=!th.classList.contains('asc');
        Array.prototype.forEach.call(ths,function(h){h.classList.remove('asc');h.classList.remove('desc');});
        th.classList.add(asc?'asc':'desc');
        var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){
          var x=key(a.cells[i]),y=key(b.cells[i]),nx=parseFloat(x),ny=parseFloat(y),r;
          var ex=(x===''),ey=(y==='');
          if(ex||ey){return ex===ey?0:(ex?1:-1);}
          if(!isNaN(nx)&&!isNaN(ny)){r=nx-ny;}else{r=x.localeCompare(y);}
          return asc?r:-r;
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
)js";

}  // namespace

// ---- public ---------------------------------------------------------------------------------------

std::string spearman_sentence(double rho, double p, int64_t n, std::string_view x, std::string_view y) {
  if (!std::isfinite(rho) || n < 3)
    return "Too few heads (n = " + std::to_string(n) + ") to measure a correlation.";
  const double a = std::abs(rho);
  const bool tappa_axes = x.substr(0, 4) == "qsim" && y == "topk_stability";
  std::string s;
  if (a < 0.2) {
    s = tappa_axes ? "No meaningful correlation: in this run, how similar a head's queries stay over time says "
                     "little about how stable its top-k attention is — TAPPA's prediction is not borne out here."
                   : "No meaningful correlation between " + metric_name(x) + " and " + metric_name(y) + ".";
  } else {
    const std::string strength = a >= 0.7 ? "Strong" : a >= 0.4 ? "Moderate" : "Weak";
    if (rho > 0) {
      s = strength + " positive correlation: " +
          (tappa_axes ? std::string(a >= 0.4 ? "heads whose queries stay similar over time have stable top-k "
                                               "attention, as TAPPA predicts."
                                             : "heads whose queries stay similar over time tend to have somewhat more "
                                               "stable top-k attention — the direction TAPPA predicts, but loosely.")
                      : "higher " + metric_name(x) + " goes with higher " + metric_name(y) + ".");
    } else {
      s = strength + " negative correlation: " +
          (tappa_axes ? std::string("heads with more self-similar queries have less stable top-k attention — the "
                                    "opposite of what TAPPA predicts; check the window settings.")
                      : "higher " + metric_name(x) + " goes with lower " + metric_name(y) + ".");
    }
  }
  if (std::isfinite(p)) {
    if (p < 0.001) s += " It is highly significant (p < 0.001, n = " + std::to_string(n) + ").";
    else if (p < 0.05) s += " It is statistically significant (p = " + fixed(p, 3) + ", n = " + std::to_string(n) + ").";
    else s += " It is not statistically significant (p = " + fixed(p, 3) + ", n = " + std::to_string(n) + "), so treat it with caution.";
  }
  return s;
}

std::string render_report_html(const nlohmann::json& report, const std::string& out_dir) {
  Context c{report, out_dir, {}, 0, 0};
  const json& corr = at(report, "correlation");
  if (at(corr, "x").is_string()) c.xkey = str(corr, "x");
  if (at(corr, "y").is_string()) c.ykey = str(corr, "y");
  const json& heads = at(report, "heads");
  int max_l = -1, max_h = -1;
  if (heads.is_array())
    for (const json& h : heads) {
      const auto l = integer(h, "layer"), hd = integer(h, "head");
      if (!l || !hd || *l < 0 || *hd < 0 || *l > 1'000'000 || *hd > 1'000'000) continue;
      c.heads.emplace(HeadKey{*l, *hd}, &h);
      max_l = std::max<int>(max_l, static_cast<int>(*l));
      max_h = std::max<int>(max_h, static_cast<int>(*hd));
    }
  const json& m = at(report, "model");
  c.n_layer = std::max<int>(static_cast<int>(integer(m, "n_layer").value_or(0)), max_l + 1);
  c.n_head = std::max<int>(static_cast<int>(integer(m, "n_head").value_or(0)), max_h + 1);
  if (c.heads.empty()) c.n_layer = c.n_head = 0;

  // Each section renders on its own: a malformed part of the JSON shows as a note, not a lost page.
  auto guarded = [&](const char* id, const char* title, std::string (*fn)(const Context&)) -> std::string {
    try {
      return fn(c);
    } catch (const std::exception& e) {
      return "<section id=\"" + std::string(id) + "\"><h2>" + escape(title) +
             "</h2><p class=\"bad\">This section could not be rendered: " + escape(e.what()) + "</p></section>";
    }
  };
  const bool has_iv = at(report, "intervention").is_object();

  std::string name = str(m, "name");
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                     "<meta name=\"generator\" content=\"tappa " + escape(str(report, "tappa_version")) + "\">"
                     "<title>TAPPA report" + (name.empty() ? std::string() : " — " + escape(name)) +
                     "</title><style>" + kCss + "</style></head><body>";
  html += guarded("top", "Header", render_header);
  html += "<nav class=\"toc\"><div class=\"wrap\"><a href=\"#summary\">Summary</a><a href=\"#layers\">Per layer</a>"
          "<a href=\"#maps\">Layer × head</a><a href=\"#gallery\">Gallery</a><a href=\"#rope\">RoPE channels</a>"
          "<a href=\"#scatter\">q-sim vs stability</a><a href=\"#agreement\">Agreement</a>";
  if (has_iv) html += "<a href=\"#intervention\">Intervention</a>";
  html += "<a href=\"#heads\">All heads</a></div></nav><main class=\"wrap\">";
  html += guarded("overview", "Overview", render_overview);
  html += guarded("summary", "1. Summary", render_summary);
  html += guarded("layers", "2. q-similarity per layer", render_layers);
  html += guarded("maps", "3. Layer × head maps", render_maps);
  html += guarded("gallery", "4. Gallery of attention maps", render_gallery);
  html += guarded("rope", "5. RoPE channel energy", render_rope);
  html += guarded("scatter", "6. q-similarity vs. top-k stability", render_scatter);
  html += guarded("agreement", "7. Prediction agreement", render_agreement);
  if (has_iv) html += guarded("intervention", "8. Intervention", render_intervention);
  html += guarded("heads", "9. All heads", render_head_table);
  html += "</main><footer class=\"wrap\">Generated by tappa " + escape(str(report, "tappa_version")) +
          " · self-contained page: every figure is embedded, nothing is loaded from the network.</footer>";
  html += "<script>" + std::string(kScript) + "</script></body></html>\n";
  return html;
}

void write_report(const nlohmann::json& report, const std::string& out_dir) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create " + out_dir + ": " + ec.message());
  atomic_write((std::filesystem::path(out_dir) / "report.html").string(), render_report_html(report, out_dir));
}

void write_report_json(const nlohmann::json& report, const std::string& out_dir) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create " + out_dir + ": " + ec.message());
  atomic_write((std::filesystem::path(out_dir) / "report.json").string(),
               report.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace tappa::report
