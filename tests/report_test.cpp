// Tests of src/report/: PNG heat/label maps, colour maps, base64, SVG charts, atomic writes and the
// HTML report rendered from a synthetic report JSON (2 layers × 3 heads).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "report/atomic_write.h"
#include "report/html.h"
#include "report/png.h"
#include "report/svg.h"
#include "tappa/error.h"

// The PNG decoder, with internal linkage so that it cannot clash with another test's copy.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace fs = std::filesystem;
using nlohmann::json;
using namespace tappa::report;

namespace {

// ---- helpers --------------------------------------------------------------------------------------

struct Decoded {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const size_t o = (static_cast<size_t>(y) * w + x) * 3;
    return {rgb[o], rgb[o + 1], rgb[o + 2]};
  }
};

Decoded decode(const std::vector<uint8_t>& png) {
  Decoded d;
  int n = 0;
  unsigned char* p = stbi_load_from_memory(png.data(), static_cast<int>(png.size()), &d.w, &d.h, &n, 3);
  if (!p) return d;
  d.rgb.assign(p, p + static_cast<size_t>(d.w) * d.h * 3);
  stbi_image_free(p);
  return d;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

// A tiny XML/HTML well-formedness check: every tag closed in order, attribute quotes balanced,
// every '&' starts an entity. With html = true, void elements need no closing tag and the contents
// of <script> and <style> are skipped. Returns "" when the text is well formed.
std::string check_balanced(const std::string& s, bool html) {
  static const std::set<std::string> kVoid = {"meta", "img", "br", "hr", "link", "input", "col",
                                              "wbr", "source", "area", "base", "embed", "track"};
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      if (semi == std::string::npos || semi - i > 10) return "bare & at " + std::to_string(i);
      const std::string ent = s.substr(i + 1, semi - i - 1);
      const bool ok = ent == "amp" || ent == "lt" || ent == "gt" || ent == "quot" || ent == "apos" ||
                      (ent.size() > 1 && ent[0] == '#');
      if (!ok) return "unknown entity &" + ent + ";";
      i = semi + 1;
      continue;
    }
    if (s[i] != '<') {
      if (s[i] == '>' && !html) return "stray > at " + std::to_string(i);
      ++i;
      continue;
    }
    if (s.compare(i, 4, "<!--") == 0) {
      const size_t e = s.find("-->", i);
      if (e == std::string::npos) return "unterminated comment";
      i = e + 3;
      continue;
    }
    if (s.compare(i, 2, "<!") == 0 || s.compare(i, 2, "<?") == 0) {
      const size_t e = s.find('>', i);
      if (e == std::string::npos) return "unterminated declaration";
      i = e + 1;
      continue;
    }
    const bool closing = i + 1 < s.size() && s[i + 1] == '/';
    size_t j = i + 1 + (closing ? 1 : 0);
    std::string name;
    while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == ':' || s[j] == '-'))
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(s[j++])));
    if (name.empty()) return "stray < at " + std::to_string(i);
    size_t k = j;
    char q = 0;
    for (; k < s.size(); ++k) {
      const char c = s[k];
      if (q) {
        if (c == q) q = 0;
        else if (c == '<') return "< inside attribute of <" + name + ">";
      } else if (c == '"' || c == '\'') {
        q = c;
      } else if (c == '>') {
        break;
      }
    }
    if (k >= s.size()) return "unterminated tag <" + name;
    const bool self = s[k - 1] == '/';
    if (closing) {
      if (stack.empty()) return "</" + name + "> without opening tag";
      if (stack.back() != name) return "</" + name + "> closes <" + stack.back() + ">";
      stack.pop_back();
      i = k + 1;
      continue;
    }
    i = k + 1;
    if (self || (html && kVoid.count(name))) continue;
    stack.push_back(name);
    if (html && (name == "script" || name == "style")) {
      const size_t e = s.find("</" + name, i);
      if (e == std::string::npos) return "unterminated <" + name + ">";
      i = e;
    }
  }
  if (!stack.empty()) return "<" + stack.back() + "> never closed";
  return "";
}

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() /
           ("tappa_report_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// ---- PNG ------------------------------------------------------------------------------------------

TEST(ReportPng, HeaderAndSize) {
  const std::vector<float> v = {0, 1, 2, 3, 4, 5};
  for (int scale : {1, 4}) {
    HeatmapOptions o;
    o.scale = scale;
    const auto png = encode_heatmap_png(v, 2, 3, o);
    ASSERT_GE(png.size(), 33u);
    const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    EXPECT_EQ(0, std::memcmp(png.data(), sig, 8));
    EXPECT_EQ(0, std::memcmp(png.data() + 12, "IHDR", 4));
    const auto size = png_size(png);
    ASSERT_TRUE(size);
    EXPECT_EQ(size->first, 3 * scale);   // width = cols
    EXPECT_EQ(size->second, 2 * scale);  // height = rows
    EXPECT_EQ(png[24], 8);               // bit depth
    EXPECT_EQ(png[25], 2);               // colour type RGB
    const Decoded d = decode(png);
    EXPECT_EQ(d.w, 3 * scale);
    EXPECT_EQ(d.h, 2 * scale);
  }
  EXPECT_FALSE(png_size(std::vector<uint8_t>{1, 2, 3}));
}

TEST(ReportPng, DecodesToColormapColours) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> v = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, nan};
  for (Colormap cmap : {Colormap::Viridis, Colormap::Magma, Colormap::Gray}) {
    HeatmapOptions o;
    o.cmap = cmap;
    o.vmin = 0.0f;
    o.vmax = 1.0f;
    o.scale = 3;
    o.nan_color = {255, 0, 255};
    const Decoded d = decode(encode_heatmap_png(v, 2, 3, o));
    ASSERT_EQ(d.w, 9);
    ASSERT_EQ(d.h, 6);
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 3; ++c) {
        const float x = v[r * 3 + c];
        const Rgb want = std::isnan(x) ? o.nan_color : colormap_color(cmap, x);
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx) {
            const Rgb got = d.at(c * 3 + dx, r * 3 + dy);
            EXPECT_EQ(got, want) << "cell " << r << "," << c << " value " << x;
          }
      }
    // Ends of the scale are the colour map's ends.
    EXPECT_EQ(d.at(0, 0), colormap_table(cmap).front());
    EXPECT_EQ(d.at(3, 3), colormap_table(cmap).back());  // row 1, col 1 = 1.0
  }
  // The documented anchors of viridis.
  EXPECT_EQ(to_hex(colormap_table(Colormap::Viridis).front()), "#440154");
  EXPECT_EQ(to_hex(colormap_table(Colormap::Viridis).back()), "#fde725");
  EXPECT_EQ(to_hex(colormap_table(Colormap::Magma).front()), "#000004");
}

TEST(ReportPng, LogScaleAndRanges) {
  // Floor 1e-3: 1e-4 is clamped to the floor; decades map to equal steps.
  const std::vector<float> v = {1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f, 1.0f};
  HeatmapOptions o;
  o.log_scale = true;
  o.log_floor = 1e-3f;
  const HeatmapRange r = heatmap_range(v, o);
  EXPECT_NEAR(r.lo, 1e-3, 1e-9);
  EXPECT_NEAR(r.hi, 1.0, 1e-9);
  EXPECT_NEAR(r.position(1e-4), 0.0, 1e-6);
  EXPECT_NEAR(r.position(1e-2), 1.0 / 3, 1e-6);
  EXPECT_NEAR(r.position(1e-1), 2.0 / 3, 1e-6);
  const Decoded d = decode(encode_heatmap_png(v, 2, 3, o));
  EXPECT_EQ(d.at(0, 0), colormap_color(Colormap::Viridis, 0.0));
  EXPECT_EQ(d.at(2, 0), colormap_color(Colormap::Viridis, 1.0 / 3));
  EXPECT_EQ(d.at(0, 1), colormap_color(Colormap::Viridis, 2.0 / 3));
  EXPECT_EQ(d.at(1, 1), colormap_color(Colormap::Viridis, 1.0));

  // Auto range is min..max; a fixed range clamps.
  const std::vector<float> w = {2, 4, 6, 8};
  HeatmapOptions a;
  EXPECT_DOUBLE_EQ(heatmap_range(w, a).lo, 2);
  EXPECT_DOUBLE_EQ(heatmap_range(w, a).hi, 8);
  EXPECT_DOUBLE_EQ(heatmap_range(w, a).position(5), 0.5);
  a.vmin = 4;
  a.vmax = 6;
  const Decoded e = decode(encode_heatmap_png(w, 1, 4, a));
  EXPECT_EQ(e.at(0, 0), colormap_color(Colormap::Viridis, 0));
  EXPECT_EQ(e.at(3, 0), colormap_color(Colormap::Viridis, 1));
  // A constant grid gets the middle colour rather than dividing by zero.
  const std::vector<float> k = {3, 3};
  EXPECT_EQ(decode(encode_heatmap_png(k, 1, 2)).at(0, 0), colormap_color(Colormap::Viridis, 0.5));
}

TEST(ReportPng, CategoricalPalette) {
  const std::vector<Rgb> palette = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
  const std::vector<int> labels = {0, 1, 2, -1, 7, 1};
  const Rgb missing = {1, 2, 3};
  const Decoded d = decode(encode_categorical_png(labels, 2, 3, palette, 2, missing));
  ASSERT_EQ(d.w, 6);
  ASSERT_EQ(d.h, 4);
  const Rgb want[] = {palette[0], palette[1], palette[2], missing, missing, palette[1]};
  for (int i = 0; i < 6; ++i) {
    const int r = i / 3, c = i % 3;
    EXPECT_EQ(d.at(c * 2 + 1, r * 2 + 1), want[i]) << i;
  }
}

TEST(ReportPng, ColormapMonotonicInLuminance) {
  for (Colormap cmap : {Colormap::Viridis, Colormap::Magma, Colormap::Gray}) {
    const auto& t = colormap_table(cmap);
    // Strictly brighter at every 8th entry, never noticeably darker between neighbours (8-bit rounding).
    for (int i = 8; i < 256; i += 8)
      EXPECT_GT(relative_luminance(t[i]), relative_luminance(t[i - 8])) << colormap_name(cmap) << " at " << i;
    for (int i = 1; i < 256; ++i)
      EXPECT_GE(relative_luminance(t[i]) + 2e-3, relative_luminance(t[i - 1])) << colormap_name(cmap) << " at " << i;
    EXPECT_LT(relative_luminance(t.front()), 0.1);
    EXPECT_GT(relative_luminance(t.back()), 0.7);
  }
}

TEST(ReportPng, RejectsBadInput) {
  const std::vector<float> v = {1, 2, 3};
  EXPECT_THROW(encode_heatmap_png(v, 2, 2), tappa::Error);
  EXPECT_THROW(encode_heatmap_png(v, 0, 3), tappa::Error);
  HeatmapOptions o;
  o.scale = 0;
  EXPECT_THROW(encode_heatmap_png(v, 1, 3, o), tappa::Error);
  o.scale = 1;
  o.log_scale = true;
  o.log_floor = 0;
  EXPECT_THROW(encode_heatmap_png(v, 1, 3, o), tappa::Error);
  const std::vector<int> l = {0};
  EXPECT_THROW(encode_categorical_png(l, 1, 2, std::vector<Rgb>{{0, 0, 0}}), tappa::Error);
  EXPECT_THROW(encode_rgb_png(std::vector<uint8_t>(5), 1, 2), tappa::Error);
}

TEST(ReportPng, PoolGridAndAutoScale) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> v = {1, 2, 3, 4,  //
                                5, 6, 7, 8,  //
                                nan, nan, 0, 1,  //
                                nan, nan, 2, 9};
  const auto mx = pool_grid(v, 4, 4, 2, 2, Pool::Max);
  ASSERT_EQ(mx.size(), 4u);
  EXPECT_EQ(mx[0], 6);
  EXPECT_EQ(mx[1], 8);
  EXPECT_TRUE(std::isnan(mx[2]));
  EXPECT_EQ(mx[3], 9);
  const auto mean = pool_grid(v, 4, 4, 2, 2, Pool::Mean);
  EXPECT_FLOAT_EQ(mean[0], 3.5f);
  EXPECT_FLOAT_EQ(mean[3], 3.0f);
  EXPECT_THROW(pool_grid(v, 4, 4, 5, 2), tappa::Error);
  EXPECT_EQ(auto_scale(30, 9, 480), 16);
  EXPECT_EQ(auto_scale(2000, 2000, 480), 1);
  EXPECT_EQ(auto_scale(2, 3, 480, 32), 32);
}

TEST(ReportPng, WriteFileMatchesEncoding) {
  TempDir dir;
  const std::vector<float> v = {0.1f, 0.2f, 0.3f, 0.4f};
  const fs::path p = dir.path / "h.png";
  write_heatmap_png(p.string(), v, 2, 2);
  EXPECT_EQ(read_file(p), encode_heatmap_png(v, 2, 2));
  const std::vector<int> l = {0, 1, 1, 0};
  const std::vector<Rgb> pal = {{10, 20, 30}, {40, 50, 60}};
  write_categorical_png((dir.path / "c.png").string(), l, 2, 2, pal);
  EXPECT_EQ(decode(read_file(dir.path / "c.png")).at(1, 0), pal[1]);
}

TEST(ReportPng, LabelColoursDistinct) {
  std::set<std::string> seen;
  for (std::string_view l : pattern_labels()) seen.insert(to_hex(label_color(l)));
  EXPECT_EQ(seen.size(), pattern_labels().size());
  EXPECT_EQ(label_color("something_new"), label_color("something_new"));
  EXPECT_EQ(label_display_name("reaccess"), "re-access");
  EXPECT_EQ(parse_hex("#0a0B0c"), (Rgb{10, 11, 12}));
  EXPECT_FALSE(parse_hex("#12345"));
}

// ---- base64 ---------------------------------------------------------------------------------------

TEST(ReportBase64, KnownVectors) {
  // RFC 4648 §10.
  const std::pair<const char*, const char*> kVectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                          {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                          {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, enc] : kVectors) {
    EXPECT_EQ(base64_encode(std::string_view(plain)), enc);
    const auto dec = base64_decode(enc);
    EXPECT_EQ(std::string(dec.begin(), dec.end()), plain);
  }
  const std::vector<uint8_t> bytes = {0x00, 0xff, 0xfe, 0x10, 0x80};
  EXPECT_EQ(base64_encode(bytes), "AP/+EIA=");
  EXPECT_EQ(data_uri("image/png", std::vector<uint8_t>{'f', 'o', 'o'}), "data:image/png;base64,Zm9v");
}

TEST(ReportBase64, RoundTripAndRejects) {
  std::mt19937 rng(7);
  for (size_t n = 0; n < 300; n += 7) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    const std::string e = base64_encode(v);
    EXPECT_EQ(e.size(), (n + 2) / 3 * 4);
    EXPECT_EQ(base64_decode(e), v);
  }
  EXPECT_EQ(base64_decode("Zm9v\nYmFy"), (std::vector<uint8_t>{'f', 'o', 'o', 'b', 'a', 'r'}));
  for (const char* bad : {"Zg=", "Z===", "Zm9v!A==", "Zh==", "=Zm9", "Zg==Zg=="})
    EXPECT_THROW(base64_decode(bad), tappa::Error) << bad;
}

// ---- SVG ------------------------------------------------------------------------------------------

TEST(ReportSvg, LineChartWellFormedWithMarkers) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<svg::Series> s(3);
  s[0] = {"q-sim <post> & \"last\"", {0, 1, 2, 3}, {0.9, 0.8, 0.95, 0.7}, "", false, true};
  s[1] = {"pre", {0, 1, 2, 3}, {0.5, nan, 0.6, 0.65}, "#ff0000", true, true};
  s[2] = {"k", {0, 1, 2, 3}, {0.1, 0.2, 0.3, 0.4}, "", false, false};
  svg::ChartOptions o;
  o.title = "Per layer <test>";
  o.x_label = "layer";
  o.y_label = "cosine";
  o.x_integer = true;
  o.vlines.push_back({2, "mark", "#000000"});
  const std::string out = svg::line_chart(s, o);
  EXPECT_EQ(check_balanced(out, false), "") << out;
  EXPECT_EQ(out.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(count(out, "class=\"mk\""), 4u + 3u);  // series 2 has no markers; one NaN skipped
  EXPECT_EQ(count(out, "<polyline"), 1u + 2u + 1u);  // the NaN breaks series 1 in two
  EXPECT_NE(out.find("q-sim &lt;post&gt; &amp; &quot;last&quot;"), std::string::npos);
  EXPECT_NE(out.find("Per layer &lt;test&gt;"), std::string::npos);
  EXPECT_EQ(out.find("http://", 30), std::string::npos);  // nothing external beyond the namespace
}

TEST(ReportSvg, ScatterHasOnePointPerFinitePoint) {
  std::vector<svg::Point> pts;
  const char* labels[] = {"reaccess", "sequential", "unpredictable", "custom"};
  for (int i = 0; i < 37; ++i) pts.push_back({i / 37.0, std::sin(i * 0.3), labels[i % 4], ""});
  pts.push_back({std::numeric_limits<double>::quiet_NaN(), 0.5, "reaccess", ""});
  pts.push_back({0.5, std::numeric_limits<double>::infinity(), "reaccess", ""});
  svg::ChartOptions o;
  o.title = "Spearman ρ = 0.812";
  o.annotation = "n = 37";
  const std::string out = svg::scatter_plot(pts, o);
  EXPECT_EQ(check_balanced(out, false), "") << out;
  EXPECT_EQ(count(out, "class=\"pt\""), 37u);
  EXPECT_EQ(count(out, "<circle"), 37u + 4u);  // points + one legend dot per category
  EXPECT_NE(out.find("re-access"), std::string::npos);
  EXPECT_NE(out.find("Spearman ρ = 0.812"), std::string::npos);
  EXPECT_NE(out.find(to_hex(label_color("sequential"))), std::string::npos);
}

TEST(ReportSvg, BarChartsAndFigures) {
  std::vector<svg::Bar> bars;
  for (int i = 0; i < 32; ++i) bars.push_back({std::to_string(i), std::exp(-0.1 * i), "", ""});
  svg::ChartOptions o;
  o.title = "energy";
  o.vlines.push_back({5, "m* = 5", "#111111"});
  const std::string v = svg::bar_chart(bars, o);
  EXPECT_EQ(check_balanced(v, false), "") << v;
  EXPECT_EQ(count(v, "class=\"bar\""), 32u);
  o.horizontal = true;
  o.show_values = true;
  o.height = 0;
  const std::string h = svg::bar_chart(std::span(bars).first(5), o);
  EXPECT_EQ(check_balanced(h, false), "") << h;
  EXPECT_EQ(count(h, "class=\"bar\""), 5u);

  HeatmapRange r;
  r.lo = 1e-4, r.hi = 1, r.log_scale = true, r.log_floor = 1e-4;
  const std::string cb = svg::colorbar(Colormap::Magma, r, 200, "weight");
  EXPECT_EQ(check_balanced(cb, false), "") << cb;
  EXPECT_NE(cb.find("linearGradient"), std::string::npos);

  svg::GridFigure g;
  g.image_data_uri = "data:image/png;base64,AAAA";
  g.rows = 2, g.cols = 3;
  g.tooltips = {"a", "b", "c", "d", "e", "f<&>"};
  g.cmap = Colormap::Viridis;
  g.legend = {{"re-access", "#0072b2"}};
  const std::string gf = svg::grid_figure(g);
  EXPECT_EQ(check_balanced(gf, false), "") << gf;
  EXPECT_EQ(count(gf, "<title>"), 6u);
  EXPECT_NE(gf.find("f&lt;&amp;&gt;"), std::string::npos);

  // Empty inputs still give a well-formed frame.
  for (const std::string& e : {svg::line_chart({}, {}), svg::scatter_plot({}, {}), svg::bar_chart({}, {})}) {
    EXPECT_EQ(check_balanced(e, false), "") << e;
    EXPECT_NE(e.find("no data"), std::string::npos);
  }
}

TEST(ReportSvg, NumberFormatting) {
  EXPECT_EQ(svg::fixed(0.81234, 3), "0.812");
  EXPECT_EQ(svg::fixed(-0.0001, 3), "0.000");
  EXPECT_EQ(svg::fixed(std::nan(""), 3), "\u2014");
  EXPECT_EQ(svg::compact(2.6e6), "2.6M");
  EXPECT_EQ(svg::compact(9.7), "9.7");
  EXPECT_EQ(svg::escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
}

// ---- atomic write ---------------------------------------------------------------------------------

TEST(ReportAtomicWrite, WritesReplacesAndCleansUp) {
  TempDir dir;
  const fs::path p = dir.path / "report.json";
  atomic_write(p.string(), std::string_view("first"));
  EXPECT_EQ(read_text(p), "first");
  atomic_write(p.string(), std::string_view("second, longer"));
  EXPECT_EQ(read_text(p), "second, longer");
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) n += e.is_regular_file();
  EXPECT_EQ(n, 1u);  // no temporary left behind
  EXPECT_THROW(atomic_write((dir.path / "no_such_dir" / "x").string(), std::string_view("x")), tappa::Error);
  EXPECT_FALSE(fs::exists(dir.path / "no_such_dir"));
}

// ---- HTML report ----------------------------------------------------------------------------------

// A synthetic report of 2 layers × 3 heads, with its gallery PNGs written into `dir` (the last gallery
// entry names files that do not exist).
json make_report(const fs::path& dir, bool intervention) {
  const char* labels[6] = {"reaccess", "sequential", "unpredictable", "reaccess", "periodic_sequential", "seasonal"};
  const char* predicted[6] = {"reaccess", "sequential", "reaccess", "reaccess", "sequential", "seasonal"};
  json heads = json::array();
  json points = json::array();
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 3; ++h) {
      const int i = l * 3 + h;
      const double q = 0.9123 - 0.1111 * i;
      json energy = json::array();
      for (int m = 0; m < 8; ++m) energy.push_back(m == (i + 2) % 8 ? 0.5 : 0.05 + 0.01 * m);
      char name[32];
      std::snprintf(name, sizeof name, "maps/L%02d_H%02d.png", l, h);
      heads.push_back({{"layer", l},
                       {"head", h},
                       {"kv_head", h / 3},
                       {"qsim_post_last", q},
                       {"qsim_pre_last", q - 0.01},
                       {"qsim_pre_sliding", q - 0.02},
                       {"qsim_post_sliding", q - 0.03},
                       {"qsim_lag1", q + 0.004},
                       {"ksim_lag1", 0.5 + 0.05 * i},
                       {"metrics",
                        {{"topk_stability", 0.8 - 0.1 * i},
                         {"sink_mass", 0.6 - 0.05 * i},
                         {"reaccess_mass", 0.7 - 0.05 * i},
                         {"diag_mass", 0.1 + 0.02 * i},
                         {"best_offset", i},
                         {"best_offset_mass", 0.2},
                         {"period", i == 5 ? json(12) : json(nullptr)},
                         {"period_strength", 0.3}}},
                       {"label", labels[i]},
                       {"evidence", std::string("evidence <for> head ") + std::to_string(i)},
                       {"rope",
                        {{"dominant_channel", (i + 2) % 8},
                         {"dominance", 0.5},
                         {"wavelength", i == 0 ? 2.6e6 : 9.7 + i},
                         {"predicted_spacing", i == 0 ? 2.6e6 : 9.7 + i},
                         {"frequency_class", i == 0 ? "low" : "high"},
                         {"channel_energy", energy}}},
                       {"predicted_label", predicted[i]},
                       {"prediction_agrees", std::string(labels[i]) == predicted[i]},
                       {"map", name},
                       {"map_zoom", std::string(name).replace(std::string(name).size() - 4, 4, "_zoom.png")}});
      points.push_back({q, 0.8 - 0.1 * i, labels[i]});
    }
  fs::create_directories(dir / "maps");
  // Gallery maps: a sink column and a diagonal, as the analyzer would draw them.
  std::vector<float> att(16 * 16, 0.0f);
  for (int r = 0; r < 16; ++r) att[r * 16] = 0.6f, att[r * 16 + r] = 0.4f;
  HeatmapOptions ho;
  ho.cmap = Colormap::Magma;
  ho.log_scale = true;
  ho.log_floor = 1e-3f;
  ho.scale = 4;
  write_heatmap_png((dir / "maps/L00_H00.png").string(), att, 16, 16, ho);
  write_heatmap_png((dir / "maps/L00_H00_zoom.png").string(), std::span(att).first(64), 4, 16, ho);
  write_heatmap_png((dir / "maps/L01_H01.png").string(), att, 16, 16, {});
  write_heatmap_png((dir / "maps/L01_H01_zoom.png").string(), std::span(att).last(32), 2, 16, {});

  json r = {
      {"tappa_version", "0.1.0"},
      {"model",
       {{"path", "models/tiny.gguf"}, {"name", "Tiny <Test> Model"}, {"arch", "llama"}, {"n_layer", 2}, {"n_head", 3},
        {"n_head_kv", 1}, {"head_dim", 16}, {"n_ctx_train", 2048}, {"rope_base", 10000.0}, {"n_rot", 16},
        {"rope_layout", "norm"}}},
      {"input", {{"path", "prompts/a&b.txt"}, {"n_tokens", 300}, {"n_prompt_tokens", 280}, {"n_generated", 20}}},
      {"settings",
       {{"qsim_mode", "cosine"}, {"last_window", 32}, {"sliding_window", 64}, {"sliding_stride", 32}, {"rows", 64},
        {"topk", 8}, {"rope_base_override", intervention ? json(1000.0) : json(nullptr)}, {"channel_swap", nullptr}}},
      {"timing", {{"prefill_s", 1.25}, {"analysis_s", 0.5}, {"total_s", 1.9}, {"plain_prefill_s", 1.0}}},
      {"layers",
       {{{"layer", 0}, {"qsim_post_last", 0.8012}, {"qsim_pre_last", 0.79}, {"qsim_pre_sliding", 0.78},
         {"qsim_post_sliding", 0.77}, {"qsim_lag1", 0.81}, {"ksim_lag1", 0.55},
         {"label_counts", {{"reaccess", 1}, {"sequential", 1}, {"unpredictable", 1}}}},
        {{"layer", 1}, {"qsim_post_last", 0.5679}, {"qsim_pre_last", 0.56}, {"qsim_pre_sliding", 0.55},
         {"qsim_post_sliding", 0.54}, {"qsim_lag1", 0.58}, {"ksim_lag1", 0.7},
         {"label_counts", {{"reaccess", 1}, {"periodic_sequential", 1}, {"seasonal", 1}}}}}},
      {"heads", heads},
      {"label_counts",
       {{"reaccess", 2}, {"sequential", 1}, {"unpredictable", 1}, {"periodic_sequential", 1}, {"seasonal", 1}}},
      {"agreement",
       {{"n_heads", 6},
        {"n_agree", 4},
        {"by_label",
         {{"reaccess", {{"n", 2}, {"agree", 2}}},
          {"sequential", {{"n", 1}, {"agree", 1}}},
          {"unpredictable", {{"n", 1}, {"agree", 0}}},
          {"periodic_sequential", {{"n", 1}, {"agree", 0}}},
          {"seasonal", {{"n", 1}, {"agree", 1}}}}}}},
      {"correlation",
       {{"x", "qsim_post_last"}, {"y", "topk_stability"}, {"spearman", 0.81234}, {"p_value", 0.0498},
        {"n", 6}, {"points", points}}},
      {"gallery",
       {{{"layer", 0}, {"head", 0}, {"label", "reaccess"}, {"qsim", 0.9123}, {"png", "maps/L00_H00.png"},
         {"zoom_png", "maps/L00_H00_zoom.png"}, {"why", "highest q-sim reaccess head"}},
        {{"layer", 1}, {"head", 1}, {"label", "periodic_sequential"}, {"qsim", 0.4679}, {"png", "maps/L01_H01.png"},
         {"zoom_png", "maps/L01_H01_zoom.png"}, {"why", "clearest periodic diagonals"}},
        {{"layer", 0}, {"head", 2}, {"label", "unpredictable"}, {"qsim", 0.6901}, {"png", "maps/L00_H02.png"},
         {"zoom_png", "maps/L00_H02_zoom.png"}, {"why", "lowest q-sim head"}}}},
      {"intervention", nullptr},
  };
  if (intervention) {
    r["intervention"] = {
        {"kind", "rope_base"},
        {"baseline",
         {{"layers", {0.85, 0.6}},
          {"label_counts", {{"reaccess", 3}, {"sequential", 1}, {"unpredictable", 2}}},
          {"heads", {{{"layer", 1}, {"head", 1}, {"label", "sequential"}, {"dominant_channel", 3},
                      {"predicted_spacing", 18.5}}}}}},
        {"changed",
         {{{"layer", 1}, {"head", 1}, {"label_before", "sequential"}, {"label_after", "periodic_sequential"},
           {"spacing_before", 18.5}, {"spacing_after", 10.7}},
          {{"layer", 1}, {"head", 2}, {"label_before", "reaccess"}, {"label_after", "seasonal"},
           {"spacing_before", 2.6e6}, {"spacing_after", 4.1e4}}}}};
  }
  return r;
}

// The <tr> of one head in the head table.
std::string head_row(const std::string& html, int layer, int head) {
  const std::string key = "<tr class=\"head-row\" data-layer=\"" + std::to_string(layer) + "\" data-head=\"" +
                          std::to_string(head) + "\">";
  const size_t a = html.find(key);
  if (a == std::string::npos) return {};
  return html.substr(a, html.find("</tr>", a) - a);
}

TEST(ReportHtml, FiguresAreTheOnesInTheJson) {
  TempDir dir;
  const json r = make_report(dir.path, true);
  write_report(r, dir.path.string());
  const std::string html = read_text(dir.path / "report.html");
  ASSERT_FALSE(html.empty());
  EXPECT_EQ(check_balanced(html, true), "");
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);

  // Self-contained: nothing loaded from elsewhere.
  EXPECT_EQ(count(html, "src=\"http"), 0u);
  EXPECT_EQ(count(html, "href=\"http"), 0u);
  EXPECT_EQ(count(html, "url(http"), 0u);
  EXPECT_EQ(count(html, "<link"), 0u);
  EXPECT_EQ(count(html, "@import"), 0u);

  // Gallery: one card per entry; two existing entries give two <img> each, embedding exactly the
  // bytes of the files; the entry whose files are missing shows placeholders.
  const json& gallery = r["gallery"];
  EXPECT_EQ(count(html, "class=\"gcard\""), gallery.size());
  EXPECT_EQ(count(html, "<img class=\"gimg\""), 4u);
  EXPECT_EQ(count(html, "class=\"missing\""), 2u);
  EXPECT_EQ(count(html, "image not found"), 2u);
  for (const json& g : gallery)
    for (const char* k : {"png", "zoom_png"}) {
      const fs::path p = dir.path / g[k].get<std::string>();
      if (!fs::exists(p)) continue;
      const std::string uri = data_uri("image/png", read_file(p));
      EXPECT_EQ(count(html, "src=\"" + uri + "\""), 1u) << p;
    }
  for (const json& g : gallery) EXPECT_NE(html.find(svg::escape(g["why"].get<std::string>())), std::string::npos);
  EXPECT_NE(html.find("q-sim <b>0.912</b>"), std::string::npos);
  EXPECT_NE(html.find("q-sim <b>0.468</b>"), std::string::npos);

  // Summary: Spearman with 3 decimals, p-value, every label count.
  EXPECT_NE(html.find("ρ = 0.812"), std::string::npos);
  EXPECT_NE(html.find("p = 0.050"), std::string::npos);
  EXPECT_NE(html.find("statistically significant"), std::string::npos);
  for (auto it = r["label_counts"].begin(); it != r["label_counts"].end(); ++it)
    EXPECT_EQ(count(html, "data-label-count=\"" + it.key() + "\">" + std::to_string(it.value().get<int>()) + "<"), 1u)
        << it.key();
  // Agreement numbers.
  for (auto it = r["agreement"]["by_label"].begin(); it != r["agreement"]["by_label"].end(); ++it) {
    EXPECT_EQ(count(html, "data-agree-n=\"" + it.key() + "\">" + std::to_string(it.value()["n"].get<int>()) + "<"), 1u);
    EXPECT_EQ(count(html, "data-agree=\"" + it.key() + "\">" + std::to_string(it.value()["agree"].get<int>()) + "<"),
              1u);
  }
  EXPECT_NE(html.find("<b>4</b> of <b>6</b> heads agree"), std::string::npos);

  // Scatter: one point per correlation point.
  EXPECT_EQ(count(html, "class=\"pt\""), r["correlation"]["points"].size());
  // Per-layer table: one row per layer with the JSON's values.
  EXPECT_EQ(count(html, "class=\"layer-row\""), 2u);
  EXPECT_NE(html.find(">0.801<"), std::string::npos);
  EXPECT_NE(html.find(">0.568<"), std::string::npos);

  // Head table: one row per head, each with its own numbers.
  EXPECT_EQ(count(html, "class=\"head-row\""), r["heads"].size());
  for (const json& h : r["heads"]) {
    const std::string row = head_row(html, h["layer"], h["head"]);
    ASSERT_FALSE(row.empty());
    for (const char* k : {"qsim_post_last", "qsim_pre_last", "qsim_pre_sliding", "qsim_post_sliding", "qsim_lag1",
                          "ksim_lag1"})
      EXPECT_NE(row.find(">" + svg::fixed(h[k].get<double>(), 3) + "<"), std::string::npos) << k << " in " << row;
    EXPECT_NE(row.find(">" + svg::fixed(h["metrics"]["topk_stability"].get<double>(), 3) + "<"), std::string::npos);
    EXPECT_NE(row.find(std::string(label_display_name(h["label"].get<std::string>()))), std::string::npos);
    EXPECT_NE(row.find(">" + std::to_string(h["rope"]["dominant_channel"].get<int>()) + "<"), std::string::npos);
  }
  // Layer × head maps are embedded PNGs, one tooltip per head in each.
  EXPECT_GE(count(html, "href=\"data:image/png;base64,"), 2u);
  EXPECT_EQ(count(html, "<title>layer 1, head 2: q-sim " + svg::fixed(r["heads"][5]["qsim_post_last"], 3)), 1u);

  // RoPE: one chart per gallery head that exists in heads[], one bar per channel.
  EXPECT_NE(html.find("m* = 2 · λ = 2.6M tokens"), std::string::npos);
  EXPECT_NE(html.find("id=\"rope\""), std::string::npos);

  // Intervention: before/after counts and the changed heads.
  EXPECT_NE(html.find("id=\"intervention\""), std::string::npos);
  EXPECT_EQ(count(html, "class=\"changed-row\""), 2u);
  EXPECT_NE(html.find("data-before=\"reaccess\">3<"), std::string::npos);
  EXPECT_NE(html.find("data-after=\"reaccess\">2<"), std::string::npos);
  EXPECT_NE(html.find(">18.5<"), std::string::npos);
  EXPECT_NE(html.find(">10.7<"), std::string::npos);

  // Untrusted strings are escaped.
  EXPECT_NE(html.find("Tiny &lt;Test&gt; Model"), std::string::npos);
  EXPECT_NE(html.find("prompts/a&amp;b.txt"), std::string::npos);
  EXPECT_EQ(html.find("<for>"), std::string::npos);
}

TEST(ReportHtml, NoInterventionSectionWhenNull) {
  TempDir dir;
  write_report(make_report(dir.path, false), dir.path.string());
  const std::string html = read_text(dir.path / "report.html");
  EXPECT_EQ(check_balanced(html, true), "");
  EXPECT_EQ(html.find("id=\"intervention\""), std::string::npos);
  EXPECT_EQ(html.find("href=\"#intervention\""), std::string::npos);
}

TEST(ReportHtml, SurvivesMissingAndMalformedFields) {
  TempDir dir;
  for (const json& r : {json::object(), json(nullptr), json::array(),
                        json{{"heads", "oops"}, {"layers", {1, "x", nullptr}}, {"gallery", {{{"layer", "a"}}}},
                             {"correlation", {{"points", {{1}, {"a", "b", 3}}}, {"spearman", "high"}}},
                             {"intervention", {{"kind", "channel_swap"}, {"baseline", 3}, {"changed", "x"}}},
                             {"label_counts", {{"reaccess", "many"}}}}}) {
    ASSERT_NO_THROW(write_report(r, (dir.path / "out").string())) << r.dump();
    const std::string html = read_text(dir.path / "out" / "report.html");
    EXPECT_EQ(check_balanced(html, true), "") << r.dump();
    EXPECT_EQ(html.find("could not be rendered"), std::string::npos) << r.dump();
  }
}

TEST(ReportHtml, RefusesPathsOutsideTheReport) {
  TempDir dir;
  json r = make_report(dir.path / "out", false);
  std::vector<float> v = {1, 2, 3, 4};
  write_heatmap_png((dir.path / "secret.png").string(), v, 2, 2);
  r["gallery"][0]["png"] = "../secret.png";
  r["gallery"][0]["zoom_png"] = (dir.path / "secret.png").string();
  r["gallery"][1]["png"] = "report.json";  // exists, not a PNG
  write_report_json(r, (dir.path / "out").string());
  write_report(r, (dir.path / "out").string());
  const std::string html = read_text(dir.path / "out" / "report.html");
  EXPECT_EQ(count(html, data_uri("image/png", read_file(dir.path / "secret.png"))), 0u);
  EXPECT_NE(html.find("outside the report folder refused"), std::string::npos);
  EXPECT_NE(html.find("absolute path refused"), std::string::npos);
  EXPECT_NE(html.find("not a PNG file"), std::string::npos);
  EXPECT_EQ(json::parse(read_text(dir.path / "out" / "report.json")), r);
}

TEST(ReportHtml, SpearmanSentence) {
  EXPECT_NE(spearman_sentence(0.81, 1e-5, 270).find("Strong positive"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.81, 1e-5, 270).find("as TAPPA predicts"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.81, 1e-5, 270).find("p < 0.001"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.5, 0.01, 40).find("Moderate positive"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.25, 0.2, 30).find("Weak positive"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.25, 0.2, 30).find("not statistically significant"), std::string::npos);
  EXPECT_NE(spearman_sentence(-0.6, 0.001, 60).find("opposite of what TAPPA predicts"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.05, 0.7, 60).find("No meaningful"), std::string::npos);
  EXPECT_NE(spearman_sentence(0.9, 0.1, 2).find("Too few heads"), std::string::npos);
  EXPECT_EQ(spearman_sentence(0.9, 0.001, 50, "sink_mass", "diag_mass").find("TAPPA"), std::string::npos);
}

}  // namespace
