// Heat-map and label-map PNG images for reports.
//
// A grid is row-major float data, rows × cols. Heat maps go through a perceptual colour map (viridis,
// magma) whose 256-entry table is built here by interpolating a few anchor colours in CIELAB, so its
// lightness rises monotonically; a log scale with a floor, a fixed or automatic range and
// nearest-neighbour upscaling (each cell becomes scale × scale pixels, so small grids stay crisp) are
// options. Label maps take one palette index per cell. Every image can be encoded to an in-memory PNG
// (for embedding as a data: URI) or written to a file (atomically, via temp + rename).
//
// Input problems (a size that does not match rows × cols, a non-positive size, an image of more than
// kMaxPixels pixels, an unwritable path) throw tappa::Error.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tappa::report {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

std::string to_hex(Rgb c);                      // "#rrggbb"
std::optional<Rgb> parse_hex(std::string_view hex);  // "#rrggbb" or "rrggbb"; nullopt when malformed

enum class Colormap { Viridis, Magma, Gray };
std::optional<Colormap> parse_colormap(std::string_view name);  // "viridis", "magma", "gray"/"grey"
std::string_view colormap_name(Colormap cmap);

// The 256-entry table of a colour map (index 0 = low end) and the colour at t in [0, 1] (clamped;
// t is quantized to the table). NaN gives the low end.
const std::array<Rgb, 256>& colormap_table(Colormap cmap);
Rgb colormap_color(Colormap cmap, double t);
// CIE relative luminance Y of an sRGB colour, in [0, 1].
double relative_luminance(Rgb c);

// Largest image an encoder accepts (width × height), 64 Mpixel.
inline constexpr int64_t kMaxPixels = int64_t{64} << 20;

struct HeatmapOptions {
  Colormap cmap = Colormap::Viridis;
  // Log scale: values are clamped below to log_floor (> 0) and mapped by log10 before the range.
  bool log_scale = false;
  float log_floor = 1e-6f;
  // Fixed ends of the range (in value units, before any log); missing ends are taken from the finite
  // values of the grid. When vmin == vmax every cell gets the middle colour.
  std::optional<float> vmin, vmax;
  int scale = 1;                       // nearest-neighbour upscaling factor, >= 1
  Rgb nan_color = {200, 200, 200};     // cells that are NaN or infinite
};

// The range a heat map of `values` with `opt` uses, in value units (before any log), and the position
// t in [0, 1] a value gets in it (NaN for non-finite values).
struct HeatmapRange {
  double lo = 0, hi = 1;   // value units
  bool log_scale = false;
  double log_floor = 1e-6;
  double position(double v) const;
};
HeatmapRange heatmap_range(std::span<const float> values, const HeatmapOptions& opt = {});

// Heat map PNG, (cols × scale) pixels wide and (rows × scale) high; row 0 at the top.
std::vector<uint8_t> encode_heatmap_png(std::span<const float> values, int rows, int cols,
                                        const HeatmapOptions& opt = {});
void write_heatmap_png(const std::string& path, std::span<const float> values, int rows, int cols,
                       const HeatmapOptions& opt = {});

// Label map PNG: cell value i in [0, palette.size()) gets palette[i]; anything else (e.g. -1 for
// "no data") gets `missing`.
std::vector<uint8_t> encode_categorical_png(std::span<const int> labels, int rows, int cols,
                                            std::span<const Rgb> palette, int scale = 1,
                                            Rgb missing = {235, 235, 235});
void write_categorical_png(const std::string& path, std::span<const int> labels, int rows, int cols,
                           std::span<const Rgb> palette, int scale = 1, Rgb missing = {235, 235, 235});

// Plain RGB image (3 bytes per pixel, row-major, top row first) to PNG.
std::vector<uint8_t> encode_rgb_png(std::span<const uint8_t> rgb, int width, int height);

// Width and height from a PNG's IHDR chunk; nullopt when `png` does not start like a PNG.
std::optional<std::pair<int, int>> png_size(std::span<const uint8_t> png);

// An integer upscaling factor that brings the longer side of a rows × cols grid to about target_px
// (never below 1, never above max_scale).
int auto_scale(int rows, int cols, int target_px = 480, int max_scale = 32);

// Shrinks a grid to out_rows × out_cols (each at most the input size) by pooling the block of input
// cells that falls on each output cell. Max pooling keeps thin lines (diagonals, sink columns) of an
// attention map visible; NaN cells are ignored and a block of only NaN stays NaN.
enum class Pool { Max, Mean };
std::vector<float> pool_grid(std::span<const float> values, int rows, int cols, int out_rows,
                             int out_cols, Pool pool = Pool::Max);

// TAPPA pattern labels in display order and their colours (colour-blind-friendly). Unknown labels
// get a stable colour derived from the name.
std::span<const std::string_view> pattern_labels();  // reaccess, sequential, periodic_sequential,
                                                     // seasonal, unpredictable, mixed
Rgb label_color(std::string_view label);
std::string_view label_display_name(std::string_view label);  // "re-access", "periodic sequential", ...

}  // namespace tappa::report
