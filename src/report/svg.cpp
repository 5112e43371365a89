#include "report/svg.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>

namespace tappa::report::svg {
namespace {

constexpr const char* kFont =
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
constexpr const char* kInk = "#1f2937";    // text
constexpr const char* kMuted = "#6b7280";  // tick labels
constexpr const char* kGrid = "#e5e7eb";
constexpr const char* kAxis = "#9ca3af";
constexpr double kCharW = 6.6;  // average glyph width at 12 px, for layout estimates

std::string num(double v) {  // coordinates
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

double text_w(std::string_view s, double char_w = kCharW) { return static_cast<double>(s.size()) * char_w; }

std::string svg_open(int w, int h, std::string_view title) {
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
                  std::to_string(h) + "\" viewBox=\"0 0 " + std::to_string(w) + " " + std::to_string(h) +
                  "\" font-family=\"" + escape(kFont) + "\" font-size=\"12\" role=\"img\"";
  if (!title.empty()) s += " aria-label=\"" + escape(title) + "\"";
  s += ">";
  return s;
}

std::string text(double x, double y, std::string_view content, std::string_view extra = "") {
  std::string s = "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"";
  if (!extra.empty()) s += " " + std::string(extra);
  s += ">" + escape(content) + "</text>";
  return s;
}

struct Ticks {
  double lo, hi, step;
  std::vector<double> values;
};

double nice_step(double raw) {
  if (!(raw > 0) || !std::isfinite(raw)) return 1;
  const double e = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / e;
  const double nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  return nf * e;
}

// Ticks over [lo, hi]; with `extend`, the ends are widened to whole steps.
Ticks make_ticks(double lo, double hi, int target, bool extend, bool integer) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 0.5 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  double step = nice_step((hi - lo) / std::max(1, target));
  if (integer) step = std::max(1.0, std::round(step));
  if (extend) {
    lo = std::floor(lo / step + 1e-9) * step;
    hi = std::ceil(hi / step - 1e-9) * step;
  }
  Ticks t{lo, hi, step, {}};
  const double first = std::ceil(lo / step - 1e-9) * step;
  for (int i = 0; i < 200; ++i) {
    const double v = first + i * step;
    if (v > hi + step * 1e-9) break;
    t.values.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

std::string tick_label(double v, double step) {
  const double a = std::max(std::abs(v), step);
  if (a >= 1e5 || (step < 1e-3 && v != 0)) return compact(v);
  const int decimals = std::clamp(static_cast<int>(-std::floor(std::log10(step) + 1e-9)), 0, 6);
  return fixed(v, decimals);
}

struct Frame {
  double x0, y0, x1, y1;  // plot area (x0,y0 top-left)
  double xlo, xhi, ylo, yhi;
  double px(double x) const { return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0); }
  double py(double y) const { return y1 - (y - ylo) / (yhi - ylo) * (y1 - y0); }
};

struct LegendItem {
  std::string name, color;
  bool dashed = false;
  bool dot = false;
};

double legend_width(const std::vector<LegendItem>& items) {
  double w = 0;
  for (const auto& it : items) w = std::max(w, text_w(it.name));
  return items.empty() ? 0 : w + 40;
}

std::string draw_legend(const std::vector<LegendItem>& items, double x, double y) {
  std::string s = "<g class=\"legend\">";
  for (size_t i = 0; i < items.size(); ++i) {
    const double yy = y + 18.0 * static_cast<double>(i);
    const auto& it = items[i];
    if (it.dot) {
      s += "<circle cx=\"" + num(x + 9) + "\" cy=\"" + num(yy - 4) + "\" r=\"5\" fill=\"" + escape(it.color) + "\"/>";
    } else {
      s += "<line x1=\"" + num(x) + "\" y1=\"" + num(yy - 4) + "\" x2=\"" + num(x + 18) + "\" y2=\"" + num(yy - 4) +
           "\" stroke=\"" + escape(it.color) + "\" stroke-width=\"2.5\"" +
           (it.dashed ? " stroke-dasharray=\"5 3\"" : "") + "/>";
    }
    s += text(x + 24, yy, it.name, std::string("fill=\"") + kInk + "\"");
  }
  return s + "</g>";
}

// Axes, grid, tick labels, axis titles, chart title. Returns the frame and appends to `s`.
std::string draw_axes(const Frame& f, const Ticks& xt, const Ticks& yt, const ChartOptions& opt, bool x_grid) {
  std::string s;
  s += "<g class=\"grid\" stroke=\"" + std::string(kGrid) + "\" stroke-width=\"1\">";
  for (double v : yt.values)
    s += "<line x1=\"" + num(f.x0) + "\" x2=\"" + num(f.x1) + "\" y1=\"" + num(f.py(v)) + "\" y2=\"" + num(f.py(v)) + "\"/>";
  if (x_grid)
    for (double v : xt.values)
      s += "<line y1=\"" + num(f.y0) + "\" y2=\"" + num(f.y1) + "\" x1=\"" + num(f.px(v)) + "\" x2=\"" + num(f.px(v)) + "\"/>";
  s += "</g>";
  s += "<g class=\"axes\" stroke=\"" + std::string(kAxis) + "\" stroke-width=\"1\">";
  s += "<line x1=\"" + num(f.x0) + "\" x2=\"" + num(f.x1) + "\" y1=\"" + num(f.y1) + "\" y2=\"" + num(f.y1) + "\"/>";
  s += "<line x1=\"" + num(f.x0) + "\" x2=\"" + num(f.x0) + "\" y1=\"" + num(f.y0) + "\" y2=\"" + num(f.y1) + "\"/>";
  for (double v : xt.values)
    s += "<line x1=\"" + num(f.px(v)) + "\" x2=\"" + num(f.px(v)) + "\" y1=\"" + num(f.y1) + "\" y2=\"" + num(f.y1 + 4) + "\"/>";
  for (double v : yt.values)
    s += "<line x1=\"" + num(f.x0 - 4) + "\" x2=\"" + num(f.x0) + "\" y1=\"" + num(f.py(v)) + "\" y2=\"" + num(f.py(v)) + "\"/>";
  s += "</g>";
  s += "<g class=\"ticks\" fill=\"" + std::string(kMuted) + "\" font-size=\"11\">";
  for (double v : xt.values) s += text(f.px(v), f.y1 + 16, tick_label(v, xt.step), "text-anchor=\"middle\"");
  for (double v : yt.values) s += text(f.x0 - 7, f.py(v) + 4, tick_label(v, yt.step), "text-anchor=\"end\"");
  s += "</g>";
  return s;
}

std::string draw_titles(const Frame& f, const ChartOptions& opt, int width, int height) {
  std::string s;
  if (!opt.title.empty())
    s += text(f.x0, 18, opt.title, std::string("font-size=\"14\" font-weight=\"600\" fill=\"") + kInk + "\"");
  if (!opt.x_label.empty())
    s += text((f.x0 + f.x1) / 2, height - 8, opt.x_label, std::string("text-anchor=\"middle\" fill=\"") + kInk + "\"");
  if (!opt.y_label.empty()) {
    const double cy = (f.y0 + f.y1) / 2;
    s += text(14, cy, opt.y_label,
              std::string("text-anchor=\"middle\" fill=\"") + kInk + "\" transform=\"rotate(-90 14 " + num(cy) + ")\"");
  }
  if (!opt.annotation.empty())
    s += text(f.x0, opt.title.empty() ? 14 : 36, opt.annotation, std::string("fill=\"") + kMuted + "\"");
  return s;
}

double top_margin(const ChartOptions& opt) {
  return (opt.title.empty() ? 14.0 : 34.0) + (opt.annotation.empty() ? 0.0 : 18.0);
}

std::string draw_vlines(const Frame& f, const std::vector<VLine>& vlines, double (*map)(const Frame&, double)) {
  std::string s;
  for (const auto& v : vlines) {
    if (!std::isfinite(v.x)) continue;
    const double x = map(f, v.x);
    if (x < f.x0 - 0.5 || x > f.x1 + 0.5) continue;
    s += "<line class=\"vline\" x1=\"" + num(x) + "\" x2=\"" + num(x) + "\" y1=\"" + num(f.y0) + "\" y2=\"" + num(f.y1) +
         "\" stroke=\"" + escape(v.color) + "\" stroke-width=\"1.2\" stroke-dasharray=\"4 3\"/>";
    if (!v.label.empty()) {
      const bool right = x + text_w(v.label, 6.2) + 6 <= f.x1;
      s += text(right ? x + 4 : x - 4, f.y0 + 34, v.label,
                "fill=\"" + escape(v.color) + "\" font-size=\"11\" text-anchor=\"" + (right ? "start" : "end") +
                    "\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\"");
    }
  }
  return s;
}

std::string no_data(const Frame& f) {
  return text((f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, "no data",
              std::string("text-anchor=\"middle\" fill=\"") + kMuted + "\" font-style=\"italic\"");
}

double data_px(const Frame& f, double x) { return f.px(x); }

}  // namespace

std::string escape(std::string_view in) {
  std::string s;
  s.reserve(in.size() + 8);
  for (char c : in) {
    switch (c) {
      case '&': s += "&amp;"; break;
      case '<': s += "&lt;"; break;
      case '>': s += "&gt;"; break;
      case '"': s += "&quot;"; break;
      case '\'': s += "&#39;"; break;
      default:
        // Control characters are not allowed in XML 1.0 text; drop them (keep tab/newline).
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t' && c != '\r') break;
        s += c;
    }
  }
  return s;
}

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return "\u2014";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", std::clamp(decimals, 0, 12), v);
  std::string s = buf;
  // "-0.000" reads oddly; print it as 0.
  if (s[0] == '-' && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);
  return s;
}

std::string compact(double v) {
  if (!std::isfinite(v)) return "\u2014";
  const double a = std::abs(v);
  char buf[64];
  if (a >= 1e9) std::snprintf(buf, sizeof buf, "%.3gG", v / 1e9);
  else if (a >= 1e6) std::snprintf(buf, sizeof buf, "%.3gM", v / 1e6);
  else if (a >= 1e4) std::snprintf(buf, sizeof buf, "%.3gk", v / 1e3);
  else if (a >= 1e3) std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (a >= 1e-3 || a == 0) std::snprintf(buf, sizeof buf, "%.3g", v);
  else std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

std::string series_color(size_t i) {
  static const char* kColors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return kColors[i % std::size(kColors)];
}

std::string line_chart(std::span<const Series> series, const ChartOptions& opt) {
  const int W = std::max(opt.width, 200), H = std::max(opt.height, 120);
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  std::vector<LegendItem> legend;
  for (size_t i = 0; i < series.size(); ++i) {
    const size_t n = std::min(series[i].x.size(), series[i].y.size());
    for (size_t k = 0; k < n; ++k)
      if (std::isfinite(series[i].x[k]) && std::isfinite(series[i].y[k])) {
        xlo = std::min(xlo, series[i].x[k]);
        xhi = std::max(xhi, series[i].x[k]);
        ylo = std::min(ylo, series[i].y[k]);
        yhi = std::max(yhi, series[i].y[k]);
      }
    legend.push_back({series[i].name, series[i].color.empty() ? series_color(i) : series[i].color, series[i].dashed});
  }
  const bool empty = !(xlo <= xhi);
  if (empty) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  if (opt.x_min) xlo = *opt.x_min;
  if (opt.x_max) xhi = *opt.x_max;
  if (opt.y_min) ylo = *opt.y_min;
  if (opt.y_max) yhi = *opt.y_max;
  const Ticks yt = make_ticks(ylo, yhi, 5, !opt.y_min && !opt.y_max, false);
  const bool show_legend = opt.legend && !series.empty();
  const double lw = show_legend ? legend_width(legend) : 0;
  double ylab_w = 0;
  for (double v : yt.values) ylab_w = std::max(ylab_w, text_w(tick_label(v, yt.step), 6.0));
  Frame f{};
  f.x0 = (opt.y_label.empty() ? 8 : 26) + ylab_w + 10;
  f.y0 = top_margin(opt);
  f.x1 = W - 14 - lw;
  f.y1 = H - (opt.x_label.empty() ? 26 : 44);
  const int xtarget = std::max(2, static_cast<int>((f.x1 - f.x0) / 70));
  Ticks xt = make_ticks(xlo, xhi, xtarget, false, opt.x_integer);
  f.xlo = xt.lo, f.xhi = xt.hi, f.ylo = yt.lo, f.yhi = yt.hi;

  std::string s = svg_open(W, H, opt.title);
  s += draw_axes(f, xt, yt, opt, false);
  s += draw_vlines(f, opt.vlines, data_px);
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& sr = series[i];
    const std::string color = legend[i].color;
    const size_t n = std::min(sr.x.size(), sr.y.size());
    std::string pts;
    auto flush = [&] {
      if (!pts.empty())
        s += "<polyline fill=\"none\" stroke=\"" + escape(color) + "\" stroke-width=\"2\" stroke-linejoin=\"round\"" +
             (sr.dashed ? " stroke-dasharray=\"6 4\"" : "") + " points=\"" + pts + "\"/>";
      pts.clear();
    };
    for (size_t k = 0; k < n; ++k) {
      if (!std::isfinite(sr.x[k]) || !std::isfinite(sr.y[k])) {
        flush();
        continue;
      }
      if (!pts.empty()) pts += ' ';
      pts += num(f.px(sr.x[k])) + "," + num(f.py(sr.y[k]));
    }
    flush();
    if (sr.markers) {
      s += "<g fill=\"" + escape(color) + "\">";
      for (size_t k = 0; k < n; ++k) {
        if (!std::isfinite(sr.x[k]) || !std::isfinite(sr.y[k])) continue;
        s += "<circle class=\"mk\" cx=\"" + num(f.px(sr.x[k])) + "\" cy=\"" + num(f.py(sr.y[k])) +
             "\" r=\"2.6\"><title>" + escape(sr.name) + " · " + escape(opt.x_label.empty() ? "x" : opt.x_label) + " " +
             escape(tick_label(sr.x[k], xt.step)) + ": " +
             escape(fixed(sr.y[k], 3)) + "</title></circle>";
      }
      s += "</g>";
    }
  }
  if (empty) s += no_data(f);
  s += draw_titles(f, opt, W, H);
  if (show_legend) s += draw_legend(legend, W - lw + 4, f.y0 + 10);
  return s + "</svg>";
}

std::string scatter_plot(std::span<const Point> points, const ChartOptions& opt) {
  const int W = std::max(opt.width, 200), H = std::max(opt.height, 120);
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  std::vector<std::string> cats;
  for (const Point& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    xlo = std::min(xlo, p.x), xhi = std::max(xhi, p.x), ylo = std::min(ylo, p.y), yhi = std::max(yhi, p.y);
    if (std::find(cats.begin(), cats.end(), p.category) == cats.end()) cats.push_back(p.category);
  }
  const bool empty = !(xlo <= xhi);
  if (empty) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  // Known labels first, in their canonical order, then the rest as met.
  std::vector<std::string> order;
  for (std::string_view l : pattern_labels())
    if (std::find(cats.begin(), cats.end(), l) != cats.end()) order.emplace_back(l);
  for (const auto& c : cats)
    if (std::find(order.begin(), order.end(), c) == order.end()) order.push_back(c);
  std::vector<LegendItem> legend;
  for (const auto& c : order)
    legend.push_back({std::string(label_display_name(c)), to_hex(label_color(c)), false, true});

  const double xpad = (xhi - xlo) * 0.04, ypad = (yhi - ylo) * 0.04;
  xlo = opt.x_min.value_or(xlo - xpad), xhi = opt.x_max.value_or(xhi + xpad);
  ylo = opt.y_min.value_or(ylo - ypad), yhi = opt.y_max.value_or(yhi + ypad);
  const Ticks yt = make_ticks(ylo, yhi, 5, false, false);
  const bool show_legend = opt.legend && !legend.empty();
  const double lw = show_legend ? legend_width(legend) : 0;
  double ylab_w = 0;
  for (double v : yt.values) ylab_w = std::max(ylab_w, text_w(tick_label(v, yt.step), 6.0));
  Frame f{};
  f.x0 = (opt.y_label.empty() ? 8 : 26) + ylab_w + 10;
  f.y0 = top_margin(opt);
  f.x1 = W - 14 - lw;
  f.y1 = H - (opt.x_label.empty() ? 26 : 44);
  const Ticks xt = make_ticks(xlo, xhi, std::max(2, static_cast<int>((f.x1 - f.x0) / 70)), false, opt.x_integer);
  f.xlo = xt.lo, f.xhi = xt.hi, f.ylo = yt.lo, f.yhi = yt.hi;

  std::string s = svg_open(W, H, opt.title);
  s += draw_axes(f, xt, yt, opt, true);
  s += draw_vlines(f, opt.vlines, data_px);
  s += "<g class=\"points\" stroke=\"#ffffff\" stroke-width=\"0.8\" fill-opacity=\"0.85\">";
  for (const Point& p : points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    const std::string tip = p.tooltip.empty() ? std::string(label_display_name(p.category)) + " (" + fixed(p.x, 3) +
                                                    ", " + fixed(p.y, 3) + ")"
                                              : p.tooltip;
    s += "<circle class=\"pt\" cx=\"" + num(f.px(p.x)) + "\" cy=\"" + num(f.py(p.y)) + "\" r=\"4.5\" fill=\"" +
         to_hex(label_color(p.category)) + "\"><title>" + escape(tip) + "</title></circle>";
  }
  s += "</g>";
  if (empty) s += no_data(f);
  s += draw_titles(f, opt, W, H);
  if (show_legend) s += draw_legend(legend, W - lw + 4, f.y0 + 10);
  return s + "</svg>";
}

std::string bar_chart(std::span<const Bar> bars, const ChartOptions& opt) {
  const int W = std::max(opt.width, 160);
  const size_t n = bars.size();
  double vlo = 0, vhi = 0;
  for (const Bar& b : bars)
    if (std::isfinite(b.value)) vlo = std::min(vlo, b.value), vhi = std::max(vhi, b.value);
  if (opt.y_min) vlo = *opt.y_min;
  if (opt.y_max) vhi = *opt.y_max;
  if (!(vhi > vlo)) vhi = vlo + 1;
  auto value_text = [&](double v) { return opt.value_decimals >= 0 ? fixed(v, opt.value_decimals) : compact(v); };
  auto tip_of = [&](const Bar& b) { return b.tooltip.empty() ? b.label + ": " + value_text(b.value) : b.tooltip; };
  auto color_of = [&](const Bar& b) { return b.color.empty() ? series_color(0) : b.color; };

  if (opt.horizontal) {
    double lab_w = 0, val_w = 0;
    for (const Bar& b : bars) lab_w = std::max(lab_w, text_w(b.label)), val_w = std::max(val_w, text_w(value_text(b.value)));
    const double band = 26;
    const double top = opt.title.empty() ? 10 : 34;
    const int H = static_cast<int>(top + band * static_cast<double>(std::max<size_t>(n, 1)) + (opt.x_label.empty() ? 12 : 30));
    Frame f{};
    f.x0 = lab_w + 16;
    f.x1 = W - 12 - (opt.show_values ? val_w + 8 : 0);
    f.y0 = top;
    f.y1 = top + band * std::max<size_t>(n, 1);
    f.xlo = vlo, f.xhi = vhi, f.ylo = 0, f.yhi = 1;
    std::string s = svg_open(W, H, opt.title);
    s += "<line x1=\"" + num(f.px(0)) + "\" x2=\"" + num(f.px(0)) + "\" y1=\"" + num(f.y0) + "\" y2=\"" + num(f.y1) +
         "\" stroke=\"" + kAxis + "\"/>";
    for (size_t i = 0; i < n; ++i) {
      const Bar& b = bars[i];
      const double yc = f.y0 + band * (static_cast<double>(i) + 0.5);
      s += text(f.x0 - 8, yc + 4, b.label, std::string("text-anchor=\"end\" fill=\"") + kInk + "\"");
      if (!std::isfinite(b.value)) continue;
      const double xa = f.px(std::min(0.0, b.value)), xb = f.px(std::max(0.0, b.value));
      s += "<rect class=\"bar\" x=\"" + num(xa) + "\" y=\"" + num(yc - band * 0.36) + "\" width=\"" +
           num(std::max(xb - xa, 0.0)) + "\" height=\"" + num(band * 0.72) + "\" rx=\"2\" fill=\"" +
           escape(color_of(b)) + "\"><title>" + escape(tip_of(b)) + "</title></rect>";
      if (opt.show_values) s += text(xb + 6, yc + 4, value_text(b.value), std::string("fill=\"") + kInk + "\"");
    }
    if (n == 0) s += no_data(f);
    if (!opt.title.empty())
      s += text(8, 18, opt.title, std::string("font-size=\"14\" font-weight=\"600\" fill=\"") + kInk + "\"");
    if (!opt.x_label.empty())
      s += text((f.x0 + f.x1) / 2, H - 8, opt.x_label, std::string("text-anchor=\"middle\" fill=\"") + kMuted + "\"");
    return s + "</svg>";
  }

  const int H = std::max(opt.height > 0 ? opt.height : 260, 120);
  const Ticks yt = make_ticks(vlo, vhi, 5, !opt.y_max, false);
  double ylab_w = 0;
  for (double v : yt.values) ylab_w = std::max(ylab_w, text_w(tick_label(v, yt.step), 6.0));
  Frame f{};
  f.x0 = (opt.y_label.empty() ? 8 : 26) + ylab_w + 10;
  f.y0 = top_margin(opt);
  f.x1 = W - 12;
  f.y1 = H - (opt.x_label.empty() ? 26 : 44);
  f.xlo = -0.5, f.xhi = static_cast<double>(std::max<size_t>(n, 1)) - 0.5;
  f.ylo = yt.lo, f.yhi = yt.hi;
  const double band = (f.x1 - f.x0) / static_cast<double>(std::max<size_t>(n, 1));
  size_t every = opt.label_every > 0 ? static_cast<size_t>(opt.label_every) : 1;
  if (opt.label_every <= 0) {
    double lab_w = 0;
    for (const Bar& b : bars) lab_w = std::max(lab_w, text_w(b.label, 6.0));
    while (every < n && band * static_cast<double>(every) < lab_w + 6) every = every < 5 ? every + 1 : every * 2;
    if (every == 3 || every == 4) every = every == 3 ? 4 : every;  // prefer even strides
  }
  Ticks xt{f.xlo, f.xhi, 1, {}};
  std::string s = svg_open(W, H, opt.title);
  s += draw_axes(f, xt, yt, opt, false);
  for (size_t i = 0; i < n; ++i) {
    const Bar& b = bars[i];
    const double xc = f.px(static_cast<double>(i));
    if (i % every == 0)
      s += text(xc, f.y1 + 16, b.label, std::string("text-anchor=\"middle\" fill=\"") + kMuted + "\" font-size=\"11\"");
    if (!std::isfinite(b.value)) continue;
    const double ya = f.py(std::max(0.0, b.value)), yb = f.py(std::min(0.0, b.value));
    const double bw = std::max(band * 0.72, 1.0);
    s += "<rect class=\"bar\" x=\"" + num(xc - bw / 2) + "\" y=\"" + num(ya) + "\" width=\"" + num(bw) +
         "\" height=\"" + num(std::max(yb - ya, 0.0)) + "\" fill=\"" + escape(color_of(b)) + "\"><title>" +
         escape(tip_of(b)) + "</title></rect>";
    if (opt.show_values)
      s += text(xc, ya - 4, value_text(b.value), std::string("text-anchor=\"middle\" font-size=\"11\" fill=\"") + kInk + "\"");
  }
  s += draw_vlines(f, opt.vlines, data_px);
  if (n == 0) s += no_data(f);
  s += draw_titles(f, opt, W, H);
  return s + "</svg>";
}

namespace {

std::vector<double> colorbar_ticks(const HeatmapRange& r) {
  std::vector<double> v;
  if (r.log_scale) {
    const double a = std::log10(std::max(r.lo, r.log_floor)), b = std::log10(std::max(r.hi, r.log_floor));
    if (b > a) {
      const int d = static_cast<int>(std::ceil(b - a) > 6 ? 2 : 1);
      for (int e = static_cast<int>(std::ceil(a - 1e-9)); e <= static_cast<int>(std::floor(b + 1e-9)); e += d)
        v.push_back(std::pow(10.0, e));
    }
    if (v.size() < 2) v = {std::max(r.lo, r.log_floor), std::max(r.hi, r.log_floor)};
    return v;
  }
  if (!(r.hi > r.lo)) return {r.lo};
  return make_ticks(r.lo, r.hi, 5, false, false).values;
}

std::string colorbar_body(Colormap cmap, const HeatmapRange& r, double x, double y, double w, double h,
                          const std::string& label, const std::string& id) {
  std::string s = "<defs><linearGradient id=\"" + escape(id) + "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  const auto& table = colormap_table(cmap);
  for (int i = 0; i <= 16; ++i) {
    const Rgb c = table[static_cast<size_t>(std::lround(i * 255.0 / 16))];
    s += "<stop offset=\"" + num(i / 16.0) + "\" stop-color=\"" + to_hex(c) + "\"/>";
  }
  s += "</linearGradient></defs>";
  s += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
       "\" fill=\"url(#" + escape(id) + ")\" stroke=\"" + kAxis + "\" stroke-width=\"0.8\"/>";
  const std::vector<double> ticks = colorbar_ticks(r);
  double step = ticks.size() > 1 ? std::abs(ticks[1] - ticks[0]) : std::max(std::abs(r.lo), 1e-3);
  s += "<g fill=\"" + std::string(kMuted) + "\" font-size=\"11\">";
  for (double v : ticks) {
    const double t = r.position(v);
    if (!std::isfinite(t)) continue;
    const double yy = y + h - t * h;
    s += "<line x1=\"" + num(x + w) + "\" x2=\"" + num(x + w + 4) + "\" y1=\"" + num(yy) + "\" y2=\"" + num(yy) +
         "\" stroke=\"" + kAxis + "\"/>";
    s += text(x + w + 7, yy + 4, r.log_scale ? compact(v) : tick_label(v, step));
  }
  s += "</g>";
  if (!label.empty()) {
    const double cx = x + w + 52, cy = y + h / 2;
    s += text(cx, cy, label, std::string("text-anchor=\"middle\" fill=\"") + kInk + "\" transform=\"rotate(90 " +
                                 num(cx) + " " + num(cy) + ")\"");
  }
  return s;
}

// Distinct gradient ids within one process, so several colour bars can share a page.
std::atomic<int> g_gradient_counter{0};

std::string next_gradient_id() { return "cbar" + std::to_string(++g_gradient_counter); }

}  // namespace

std::string colorbar(Colormap cmap, const HeatmapRange& range, int height, const std::string& label) {
  const int H = std::max(height, 60), W = 80 + (label.empty() ? 0 : 14);
  std::string s = svg_open(W, H, label);
  s += colorbar_body(cmap, range, 4, 8, 16, H - 16, label, next_gradient_id());
  return s + "</svg>";
}

std::string grid_figure(const GridFigure& fig) {
  const int rows = std::max(fig.rows, 1), cols = std::max(fig.cols, 1);
  int cell = fig.cell_px;
  if (cell <= 0) cell = std::clamp(560 / std::max(rows, cols), 5, 36);
  const double gw = static_cast<double>(cols) * cell, gh = static_cast<double>(rows) * cell;
  const double left = 58, top = fig.title.empty() ? 12 : 34, bottom = 46;
  double right = 16;
  if (fig.cmap) right += 100;
  double legend_w = 0;
  for (const auto& [name, color] : fig.legend) legend_w = std::max(legend_w, text_w(name) + 34);
  right += legend_w;
  const double legend_h = 18.0 * static_cast<double>(fig.legend.size()) + 10;
  const int W = static_cast<int>(std::ceil(left + gw + right));
  const int H = static_cast<int>(std::ceil(top + std::max(gh, fig.cmap ? 120.0 : legend_h) + bottom));
  std::string s = svg_open(W, H, fig.title);
  if (!fig.title.empty())
    s += text(left, 20, fig.title, std::string("font-size=\"14\" font-weight=\"600\" fill=\"") + kInk + "\"");
  s += "<rect x=\"" + num(left - 0.5) + "\" y=\"" + num(top - 0.5) + "\" width=\"" + num(gw + 1) + "\" height=\"" +
       num(gh + 1) + "\" fill=\"#f3f4f6\" stroke=\"" + kAxis + "\"/>";
  if (!fig.image_data_uri.empty())
    s += "<image x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(gw) + "\" height=\"" + num(gh) +
         "\" preserveAspectRatio=\"none\" style=\"image-rendering:pixelated;image-rendering:crisp-edges\" href=\"" +
         escape(fig.image_data_uri) + "\"/>";
  // Ticks: as dense as 14 px of spacing allows, on multiples of a round stride.
  auto stride_for = [](int n, double cell_px, double min_px) {
    static const int kSteps[] = {1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 256, 500, 1000};
    for (int st : kSteps)
      if (st * cell_px >= min_px || st >= n) return st;
    return n;
  };
  const int xs = stride_for(cols, cell, 22), ys = stride_for(rows, cell, 14);
  s += "<g fill=\"" + std::string(kMuted) + "\" font-size=\"11\">";
  for (int c = 0; c < cols; c += xs)
    s += text(left + (c + 0.5) * cell, top + gh + 15, std::to_string(fig.x_first + c), "text-anchor=\"middle\"");
  for (int r = 0; r < rows; r += ys)
    s += text(left - 6, top + (r + 0.5) * cell + 4, std::to_string(fig.y_first + r), "text-anchor=\"end\"");
  s += "</g>";
  if (!fig.x_label.empty())
    s += text(left + gw / 2, top + gh + 34, fig.x_label, std::string("text-anchor=\"middle\" fill=\"") + kInk + "\"");
  if (!fig.y_label.empty()) {
    const double cy = top + gh / 2;
    s += text(16, cy, fig.y_label,
              std::string("text-anchor=\"middle\" fill=\"") + kInk + "\" transform=\"rotate(-90 16 " + num(cy) + ")\"");
  }
  const size_t n_cells = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  if (fig.tooltips.size() == n_cells && n_cells <= 40000) {
    s += "<g fill=\"#000000\" fill-opacity=\"0\">";
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const std::string& tip = fig.tooltips[static_cast<size_t>(r) * cols + c];
        if (tip.empty()) continue;
        s += "<rect x=\"" + num(left + c * cell) + "\" y=\"" + num(top + r * cell) + "\" width=\"" +
             std::to_string(cell) + "\" height=\"" + std::to_string(cell) + "\"><title>" + escape(tip) +
             "</title></rect>";
      }
    s += "</g>";
  }
  double x = left + gw + 18;
  if (fig.cmap) {
    const double h = std::max(gh, 120.0);
    s += colorbar_body(*fig.cmap, fig.range, x, top, 14, h, fig.colorbar_label, next_gradient_id());
    x += 100;
  }
  if (!fig.legend.empty()) {
    std::vector<LegendItem> items;
    for (const auto& [name, color] : fig.legend) items.push_back({name, color, false, false});
    s += "<g class=\"legend\">";
    for (size_t i = 0; i < items.size(); ++i) {
      const double yy = top + 18.0 * static_cast<double>(i);
      s += "<rect x=\"" + num(x) + "\" y=\"" + num(yy) + "\" width=\"12\" height=\"12\" rx=\"2\" fill=\"" +
           escape(items[i].color) + "\"/>";
      s += text(x + 18, yy + 10, items[i].name, std::string("fill=\"") + kInk + "\"");
    }
    s += "</g>";
  }
  return s + "</svg>";
}

}  // namespace tappa::report::svg
