// Small self-contained SVG charts for reports: a line chart (several series), a scatter plot (points
// coloured by category), a bar chart (vertical or horizontal), a colour bar, and a grid figure that
// frames an embedded heat-map/label-map PNG with axes, ticks, per-cell tooltips and a colour bar or a
// legend. Each builder returns one <svg> element as a string: sized (width/height and viewBox), with
// fonts set on the root, every text XML-escaped, and no external resource (images are data: URIs).
//
// Non-finite values are skipped (a line chart breaks its line there). Empty input gives a chart
// frame with a "no data" note, never an exception.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "report/png.h"

namespace tappa::report::svg {

// XML/HTML text and attribute escaping (& < > " ').
std::string escape(std::string_view text);

// Fixed-point text of v with `decimals` digits ("—" for NaN/inf); used for every number a chart or
// a report prints, so the same value always reads the same.
std::string fixed(double v, int decimals);
// Short human form: 3 significant digits, thousands as "12.3k", millions as "2.6M" ("—" for NaN).
std::string compact(double v);

// Colour of the i-th series when none is given (Tableau 10).
std::string series_color(size_t i);

struct VLine {
  double x = 0;           // data x (line chart, scatter) or bar index (bar chart)
  std::string label;      // drawn beside the line's top
  std::string color = "#374151";
};

struct ChartOptions {
  int width = 640;
  int height = 320;       // ignored by a horizontal bar chart (26 px per bar)
  std::string title;
  std::string x_label, y_label;
  std::optional<double> x_min, x_max, y_min, y_max;  // fixed axis ends; missing ends come from data
  bool legend = true;
  std::string annotation;  // one line of text under the title (a subtitle)
  std::vector<VLine> vlines;
  bool x_integer = false;  // x ticks on integers only (layers, channels)
  // Bar chart only.
  bool horizontal = false;
  bool show_values = false;  // value printed at each bar's end
  int value_decimals = -1;   // -1: compact()
  int label_every = 0;       // category label on every n-th bar; 0: as dense as fits
};

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length
  std::string color;         // empty: series_color(index)
  bool dashed = false;
  bool markers = true;       // a circle (class "mk", with a tooltip) at each finite point
};
std::string line_chart(std::span<const Series> series, const ChartOptions& opt);

struct Point {
  double x = 0, y = 0;
  std::string category;  // coloured with label_color(); legend in pattern_labels() order
  std::string tooltip;   // empty: "category (x, y)"
};
// Each finite point is one <circle class="pt">.
std::string scatter_plot(std::span<const Point> points, const ChartOptions& opt);

struct Bar {
  std::string label;
  double value = 0;
  std::string color;    // empty: series_color(0)
  std::string tooltip;  // empty: "label: value"
};
// Each bar is one <rect class="bar">.
std::string bar_chart(std::span<const Bar> bars, const ChartOptions& opt);

// A vertical colour bar for `cmap` over `range` with ticks (decades on a log range).
std::string colorbar(Colormap cmap, const HeatmapRange& range, int height, const std::string& label);

struct GridFigure {
  std::string image_data_uri;  // a PNG of rows × cols cells (any integer upscaling)
  int rows = 0, cols = 0;
  int cell_px = 0;             // displayed cell size; 0: fit about 560 px
  std::string title;
  std::string x_label = "head", y_label = "layer";
  int x_first = 0, y_first = 0;         // index printed for column 0 / row 0
  std::vector<std::string> tooltips;    // rows × cols (row-major) or empty
  std::optional<Colormap> cmap;         // colour bar when set …
  HeatmapRange range;
  std::string colorbar_label;
  std::vector<std::pair<std::string, std::string>> legend;  // … or a legend of (name, colour)
};
std::string grid_figure(const GridFigure& fig);

}  // namespace tappa::report::svg
