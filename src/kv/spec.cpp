#include "kv/spec.h"

#include <charconv>
#include <cmath>
#include <string>
#include <vector>

#include "tappa/error.h"

namespace tappa::kv {
namespace {

constexpr const char* kSpecKeys =
    "alpha, window, gamma, pool, cascading, decode-evict, decode-evict-every, n-sink, streaming-first, h2o-rows, "
    "h2o-official-mask, snapkv-mean, pyramid-beta, tau, min-head-frac, adakv-alpha, granularity, ea-n-future, "
    "ea-covariance, ea-vnorm, ea-epsilon, ea-stat-rows, seed";

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(sep, b);
    if (e == std::string_view::npos) e = s.size();
    out.emplace_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

}  // namespace

std::string spec_keys() {
  std::string keys = kSpecKeys;
  // Knobs of methods registered beyond the built-in ones.
  for (const Scorer* s : all_scorers())
    for (std::string_view k : s->extra_keys()) keys += ", " + std::string(k);
  for (const Allocator* a : all_allocators())
    for (std::string_view k : a->extra_keys()) keys += ", " + std::string(k);
  return keys;
}

CompressorFlags parse_spec(std::string_view spec) {
  const auto parts = split(spec, ':');
  if (parts.empty() || parts[0].empty()) throw Error("empty KV method spec");
  CompressorFlags f;
  f.method = parts[0];
  const Method& m = find_method(parts[0]);  // throws with the list of names
  const std::string where = "KV method '" + std::string(spec) + "': ";
  auto num = [&](const std::string& k, const std::string& v) {
    try {
      size_t used = 0;
      const double d = std::stod(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
      return d;
    } catch (const std::exception&) {
      throw Error(where + k + " needs a number, got '" + v + "'");
    }
  };
  // Whole non-negative numbers (row counts, seeds): "12.5" or "-3" is an error, not a silent cast.
  auto count = [&](const std::string& k, const std::string& v) {
    const double d = num(k, v);
    if (!(d >= 0.0) || d != std::floor(d) || d > 2147483647.0)
      throw Error(where + k + " needs a whole number >= 0, got '" + v + "'");
    return static_cast<int>(d);
  };
  auto flag = [&](const std::string& k, const std::string& v) { return num(k, v) != 0; };  // 0 / 1
  for (size_t i = 1; i < parts.size(); ++i) {
    const auto eq = parts[i].find('=');
    if (eq == std::string::npos) throw Error(where + "expected key=value, got '" + parts[i] + "'");
    const std::string k = parts[i].substr(0, eq), v = parts[i].substr(eq + 1);
    if (k == "alpha") f.alpha = v;
    else if (k == "window") f.window = count(k, v);
    else if (k == "gamma") f.gamma = num(k, v);
    else if (k == "pool") f.pool = v;
    else if (k == "cascading") f.cascading = flag(k, v);
    else if (k == "decode-evict") f.decode_evict = flag(k, v);
    else if (k == "n-sink") f.n_sink = count(k, v);
    else if (k == "pyramid-beta") f.pyramid_beta = count(k, v);
    else if (k == "tau") f.tau = v;
    else if (k == "min-head-frac") f.min_head_frac = num(k, v);
    else if (k == "adakv-alpha") f.adakv_alpha = num(k, v);
    else if (k == "granularity") {
      if (v != "kv-head" && v != "query-head") throw Error(where + "granularity must be kv-head or query-head, got '" + v + "'");
      f.granularity = v == "query-head" ? Granularity::query_head : Granularity::kv_head;
    } else if (k == "streaming-first") f.streaming_keep_first = flag(k, v);
    else if (k == "h2o-rows") f.h2o_rows = count(k, v);
    else if (k == "h2o-official-mask") f.h2o_official_mask = flag(k, v);
    else if (k == "snapkv-mean") f.snapkv_mean = flag(k, v);
    else if (k == "ea-n-future") f.ea_n_future = count(k, v);
    else if (k == "ea-covariance") f.ea_covariance = flag(k, v);
    else if (k == "ea-vnorm") f.ea_vnorm = flag(k, v);
    else if (k == "ea-epsilon") f.ea_epsilon = num(k, v);
    else if (k == "ea-stat-rows") f.ea_stat_rows = count(k, v);
    else if (k == "decode-evict-every") f.decode_evict_every = count(k, v);
    else if (k == "seed") {
      // Any 64-bit seed (what `--kv-seed` takes), read exactly rather than through a double.
      uint64_t seed = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), seed);
      if (ec != std::errc() || end != v.data() + v.size() || v.empty())
        throw Error(where + k + " needs a whole number >= 0, got '" + v + "'");
      f.seed = seed;
    }
    else {
      // A knob of the pairing's own scorer or allocator (methods registered beyond the built-ins).
      bool known = false;
      for (std::string_view e : m.scorer->extra_keys()) known = known || e == k;
      for (std::string_view e : m.allocator->extra_keys()) known = known || e == k;
      if (!known) throw Error(where + "unknown key '" + k + "' (known: " + spec_keys() + ")");
      f.extra.emplace_back(k, num(k, v));
    }
  }
  // Validate the knobs now (one clear error before any work).
  CompressorFlags probe = f;
  probe.budget = 128;
  make_compressor_options(probe);
  return f;
}

CompressorOptions make_spec_options(std::string_view spec, std::optional<int> budget, std::optional<double> ratio) {
  CompressorFlags f = parse_spec(spec);
  f.budget = budget;
  f.ratio = ratio;
  return make_compressor_options(f);
}

}  // namespace tappa::kv
