#include "report/png.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "report/atomic_write.h"
#include "tappa/error.h"

// stb_image_write: implementation compiled here only, with internal linkage (STATIC) so that another
// translation unit including it cannot clash with these symbols.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace tappa::report {
namespace {

// ---- colour science: sRGB <-> CIELAB (D65) --------------------------------------------------------

struct Lab {
  double L, a, b;
};

double srgb_to_linear(double c) { return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4); }
double linear_to_srgb(double c) {
  c = std::clamp(c, 0.0, 1.0);
  return c <= 0.0031308 ? 12.92 * c : 1.055 * std::pow(c, 1.0 / 2.4) - 0.055;
}

constexpr double kXn = 0.95047, kYn = 1.0, kZn = 1.08883;
constexpr double kDelta = 6.0 / 29.0;

double lab_f(double t) {
  return t > kDelta * kDelta * kDelta ? std::cbrt(t) : t / (3 * kDelta * kDelta) + 4.0 / 29.0;
}
double lab_finv(double t) { return t > kDelta ? t * t * t : 3 * kDelta * kDelta * (t - 4.0 / 29.0); }

Lab to_lab(Rgb c) {
  const double r = srgb_to_linear(c.r / 255.0), g = srgb_to_linear(c.g / 255.0),
               b = srgb_to_linear(c.b / 255.0);
  const double X = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b;
  const double Y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
  const double Z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b;
  const double fx = lab_f(X / kXn), fy = lab_f(Y / kYn), fz = lab_f(Z / kZn);
  return {116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)};
}

uint8_t to_byte(double v) { return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0)); }

Rgb from_lab(const Lab& lab) {
  const double fy = (lab.L + 16) / 116, fx = fy + lab.a / 500, fz = fy - lab.b / 200;
  const double X = kXn * lab_finv(fx), Y = kYn * lab_finv(fy), Z = kZn * lab_finv(fz);
  const double r = 3.2404542 * X - 1.5371385 * Y - 0.4985314 * Z;
  const double g = -0.9692660 * X + 1.8760108 * Y + 0.0415560 * Z;
  const double b = 0.0556434 * X - 0.2040259 * Y + 1.0572252 * Z;
  return {to_byte(linear_to_srgb(r)), to_byte(linear_to_srgb(g)), to_byte(linear_to_srgb(b))};
}

// Anchor colours at t = i / (n - 1): the nine-step versions of matplotlib's viridis and magma
// (van der Walt & Smith, CC0). The 256-entry tables are interpolated between them in CIELAB.
constexpr Rgb kViridisAnchors[] = {{0x44, 0x01, 0x54}, {0x47, 0x2d, 0x7b}, {0x3b, 0x52, 0x8b},
                                   {0x2c, 0x72, 0x8e}, {0x21, 0x90, 0x8c}, {0x27, 0xad, 0x81},
                                   {0x5d, 0xc8, 0x63}, {0xaa, 0xdc, 0x32}, {0xfd, 0xe7, 0x25}};
constexpr Rgb kMagmaAnchors[] = {{0x00, 0x00, 0x04}, {0x1d, 0x11, 0x47}, {0x51, 0x12, 0x7c},
                                 {0x82, 0x26, 0x81}, {0xb6, 0x36, 0x79}, {0xe6, 0x51, 0x64},
                                 {0xfb, 0x88, 0x61}, {0xfe, 0xc2, 0x87}, {0xfc, 0xfd, 0xbf}};

std::array<Rgb, 256> build_table(std::span<const Rgb> anchors) {
  std::vector<Lab> labs;
  for (const Rgb& c : anchors) labs.push_back(to_lab(c));
  std::array<Rgb, 256> table{};
  const int segments = static_cast<int>(anchors.size()) - 1;
  for (int i = 0; i < 256; ++i) {
    const double t = i / 255.0 * segments;
    const int s = std::min(static_cast<int>(t), segments - 1);
    const double u = t - s;
    const Lab& a = labs[s];
    const Lab& b = labs[s + 1];
    table[i] = from_lab({a.L + (b.L - a.L) * u, a.a + (b.a - a.a) * u, a.b + (b.b - a.b) * u});
  }
  table.front() = anchors.front();
  table.back() = anchors.back();
  return table;
}

std::array<Rgb, 256> build_gray() {
  // Even steps in lightness (L* from 0 to 100), not in sRGB byte value.
  std::array<Rgb, 256> table{};
  for (int i = 0; i < 256; ++i) table[i] = from_lab({100.0 * i / 255.0, 0, 0});
  return table;
}

void check_grid(size_t n_values, int rows, int cols, int scale, const char* what) {
  if (rows <= 0 || cols <= 0)
    throw Error(std::string(what) + ": grid size " + std::to_string(rows) + "x" + std::to_string(cols) +
                " is not positive");
  if (scale < 1 || scale > 4096) throw Error(std::string(what) + ": scale " + std::to_string(scale) + " out of range");
  if (n_values != static_cast<size_t>(rows) * static_cast<size_t>(cols))
    throw Error(std::string(what) + ": " + std::to_string(n_values) + " values for a " + std::to_string(rows) +
                "x" + std::to_string(cols) + " grid");
  const int64_t px = int64_t{rows} * scale * int64_t{cols} * scale;
  if (px > kMaxPixels)
    throw Error(std::string(what) + ": image of " + std::to_string(px) + " pixels is larger than the limit");
}

// Expands a per-cell colour grid into an upscaled RGB image and encodes it.
template <class ColorOf>
std::vector<uint8_t> encode_cells(int rows, int cols, int scale, ColorOf color_of) {
  const int w = cols * scale, h = rows * scale;
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  std::vector<uint8_t> line(static_cast<size_t>(w) * 3);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const Rgb col = color_of(static_cast<size_t>(r) * cols + c);
      for (int k = 0; k < scale; ++k) {
        uint8_t* p = &line[(static_cast<size_t>(c) * scale + k) * 3];
        p[0] = col.r;
        p[1] = col.g;
        p[2] = col.b;
      }
    }
    for (int k = 0; k < scale; ++k)
      std::memcpy(&rgb[(static_cast<size_t>(r) * scale + k) * line.size()], line.data(), line.size());
  }
  return encode_rgb_png(rgb, w, h);
}

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

}  // namespace

std::string to_hex(Rgb c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c.r, c.g, c.b);
  return buf;
}

std::optional<Rgb> parse_hex(std::string_view hex) {
  if (!hex.empty() && hex.front() == '#') hex.remove_prefix(1);
  if (hex.size() != 6) return std::nullopt;
  uint8_t v[3];
  for (int i = 0; i < 3; ++i) {
    int x = 0;
    for (int k = 0; k < 2; ++k) {
      const char ch = hex[2 * i + k];
      int d;
      if (ch >= '0' && ch <= '9') d = ch - '0';
      else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
      else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
      else return std::nullopt;
      x = x * 16 + d;
    }
    v[i] = static_cast<uint8_t>(x);
  }
  return Rgb{v[0], v[1], v[2]};
}

std::optional<Colormap> parse_colormap(std::string_view name) {
  if (name == "viridis") return Colormap::Viridis;
  if (name == "magma") return Colormap::Magma;
  if (name == "gray" || name == "grey") return Colormap::Gray;
  return std::nullopt;
}

std::string_view colormap_name(Colormap cmap) {
  switch (cmap) {
    case Colormap::Viridis: return "viridis";
    case Colormap::Magma: return "magma";
    case Colormap::Gray: return "gray";
  }
  return "viridis";
}

const std::array<Rgb, 256>& colormap_table(Colormap cmap) {
  static const std::array<Rgb, 256> viridis = build_table(kViridisAnchors);
  static const std::array<Rgb, 256> magma = build_table(kMagmaAnchors);
  static const std::array<Rgb, 256> gray = build_gray();
  switch (cmap) {
    case Colormap::Magma: return magma;
    case Colormap::Gray: return gray;
    case Colormap::Viridis: break;
  }
  return viridis;
}

Rgb colormap_color(Colormap cmap, double t) {
  if (!(t >= 0)) t = 0;  // also NaN
  if (t > 1) t = 1;
  return colormap_table(cmap)[static_cast<size_t>(std::lround(t * 255.0))];
}

double relative_luminance(Rgb c) {
  return 0.2126729 * srgb_to_linear(c.r / 255.0) + 0.7151522 * srgb_to_linear(c.g / 255.0) +
         0.0721750 * srgb_to_linear(c.b / 255.0);
}

double HeatmapRange::position(double v) const {
  if (!std::isfinite(v)) return std::numeric_limits<double>::quiet_NaN();
  double x = v, a = lo, b = hi;
  if (log_scale) {
    x = std::log10(std::max(v, log_floor));
    a = std::log10(std::max(lo, log_floor));
    b = std::log10(std::max(hi, log_floor));
  }
  if (!(b > a)) return 0.5;
  return std::clamp((x - a) / (b - a), 0.0, 1.0);
}

HeatmapRange heatmap_range(std::span<const float> values, const HeatmapOptions& opt) {
  if (opt.log_scale && !(opt.log_floor > 0)) throw Error("heat map: log_floor must be positive");
  HeatmapRange range;
  range.log_scale = opt.log_scale;
  range.log_floor = opt.log_floor;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (float v : values) {
    if (!std::isfinite(v)) continue;
    double x = v;
    if (opt.log_scale) x = std::max(x, static_cast<double>(opt.log_floor));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (!(lo <= hi)) lo = hi = 0;  // no finite value
  if (opt.vmin) lo = *opt.vmin;
  if (opt.vmax) hi = *opt.vmax;
  range.lo = lo;
  range.hi = hi;
  return range;
}

std::vector<uint8_t> encode_heatmap_png(std::span<const float> values, int rows, int cols,
                                        const HeatmapOptions& opt) {
  check_grid(values.size(), rows, cols, opt.scale, "heat map");
  const HeatmapRange range = heatmap_range(values, opt);
  const auto& table = colormap_table(opt.cmap);
  return encode_cells(rows, cols, opt.scale, [&](size_t i) {
    const double t = range.position(values[i]);
    if (std::isnan(t)) return opt.nan_color;
    return table[static_cast<size_t>(std::lround(t * 255.0))];
  });
}

void write_heatmap_png(const std::string& path, std::span<const float> values, int rows, int cols,
                       const HeatmapOptions& opt) {
  atomic_write(path, encode_heatmap_png(values, rows, cols, opt));
}

std::vector<uint8_t> encode_categorical_png(std::span<const int> labels, int rows, int cols,
                                            std::span<const Rgb> palette, int scale, Rgb missing) {
  check_grid(labels.size(), rows, cols, scale, "label map");
  return encode_cells(rows, cols, scale, [&](size_t i) {
    const int v = labels[i];
    return v >= 0 && static_cast<size_t>(v) < palette.size() ? palette[v] : missing;
  });
}

void write_categorical_png(const std::string& path, std::span<const int> labels, int rows, int cols,
                           std::span<const Rgb> palette, int scale, Rgb missing) {
  atomic_write(path, encode_categorical_png(labels, rows, cols, palette, scale, missing));
}

std::vector<uint8_t> encode_rgb_png(std::span<const uint8_t> rgb, int width, int height) {
  if (width <= 0 || height <= 0) throw Error("png: image size is not positive");
  if (int64_t{width} * height > kMaxPixels) throw Error("png: image is larger than the limit");
  if (rgb.size() != static_cast<size_t>(width) * height * 3)
    throw Error("png: " + std::to_string(rgb.size()) + " bytes for a " + std::to_string(width) + "x" +
                std::to_string(height) + " RGB image");
  std::vector<uint8_t> out;
  out.reserve(rgb.size() / 8 + 1024);
  if (!stbi_write_png_to_func(append_bytes, &out, width, height, 3, rgb.data(), width * 3) || out.empty())
    throw Error("png: encoding failed");
  return out;
}

std::optional<std::pair<int, int>> png_size(std::span<const uint8_t> png) {
  static constexpr uint8_t kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (png.size() < 24 || std::memcmp(png.data(), kSig, 8) != 0 || std::memcmp(png.data() + 12, "IHDR", 4) != 0)
    return std::nullopt;
  auto be32 = [&](size_t o) {
    return (uint32_t{png[o]} << 24) | (uint32_t{png[o + 1]} << 16) | (uint32_t{png[o + 2]} << 8) | png[o + 3];
  };
  const uint32_t w = be32(16), h = be32(20);
  if (w == 0 || h == 0 || w > 0x7fffffff || h > 0x7fffffff) return std::nullopt;
  return std::pair<int, int>{static_cast<int>(w), static_cast<int>(h)};
}

int auto_scale(int rows, int cols, int target_px, int max_scale) {
  const int longest = std::max({rows, cols, 1});
  const int s = std::max(1, target_px / longest);
  return std::clamp(s, 1, std::max(1, max_scale));
}

std::vector<float> pool_grid(std::span<const float> values, int rows, int cols, int out_rows, int out_cols,
                             Pool pool) {
  check_grid(values.size(), rows, cols, 1, "pool_grid");
  if (out_rows <= 0 || out_cols <= 0 || out_rows > rows || out_cols > cols)
    throw Error("pool_grid: output size " + std::to_string(out_rows) + "x" + std::to_string(out_cols) +
                " does not fit the input " + std::to_string(rows) + "x" + std::to_string(cols));
  std::vector<float> out(static_cast<size_t>(out_rows) * out_cols, std::numeric_limits<float>::quiet_NaN());
  for (int orow = 0; orow < out_rows; ++orow) {
    const int r0 = static_cast<int>(int64_t{orow} * rows / out_rows);
    const int r1 = static_cast<int>(int64_t{orow + 1} * rows / out_rows);
    for (int ocol = 0; ocol < out_cols; ++ocol) {
      const int c0 = static_cast<int>(int64_t{ocol} * cols / out_cols);
      const int c1 = static_cast<int>(int64_t{ocol + 1} * cols / out_cols);
      double acc = pool == Pool::Max ? -std::numeric_limits<double>::infinity() : 0.0;
      int64_t n = 0;
      for (int r = r0; r < r1; ++r)
        for (int c = c0; c < c1; ++c) {
          const float v = values[static_cast<size_t>(r) * cols + c];
          if (std::isnan(v)) continue;
          if (pool == Pool::Max) acc = std::max(acc, static_cast<double>(v));
          else acc += v;
          ++n;
        }
      if (n > 0) out[static_cast<size_t>(orow) * out_cols + ocol] = static_cast<float>(pool == Pool::Max ? acc : acc / n);
    }
  }
  return out;
}

namespace {
constexpr std::string_view kLabels[] = {"reaccess", "sequential", "periodic_sequential",
                                        "seasonal", "unpredictable", "mixed"};
// Okabe–Ito-derived, distinguishable under the common colour-vision deficiencies.
constexpr Rgb kLabelColors[] = {{0x00, 0x72, 0xb2}, {0x00, 0x9e, 0x73}, {0xcc, 0x79, 0xa7},
                                {0xe6, 0x9f, 0x00}, {0xd5, 0x5e, 0x00}, {0x99, 0x99, 0x99}};
constexpr Rgb kExtraColors[] = {{0x56, 0xb4, 0xe9}, {0xf0, 0xe4, 0x42}, {0x8c, 0x56, 0x4b},
                                {0x6a, 0x3d, 0x9a}, {0x1b, 0x9e, 0x77}, {0x66, 0x66, 0x66}};
}  // namespace

std::span<const std::string_view> pattern_labels() { return kLabels; }

Rgb label_color(std::string_view label) {
  for (size_t i = 0; i < std::size(kLabels); ++i)
    if (kLabels[i] == label) return kLabelColors[i];
  uint32_t h = 2166136261u;  // FNV-1a
  for (char c : label) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  return kExtraColors[h % std::size(kExtraColors)];
}

std::string_view label_display_name(std::string_view label) {
  if (label == "reaccess") return "re-access";
  if (label == "periodic_sequential") return "periodic sequential";
  return label;
}

}  // namespace tappa::report
