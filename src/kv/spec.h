// KV method spec strings — the one way every entry point (run, compress, bench, eval-kv, the server,
// the Python module) names a method and its knobs:
//
//   METHOD[:key=value]…      METHOD = a preset (tappa, snapkv, …) or SCORER+ALLOCATOR
//   e.g. "tappa", "snapkv+tappa", "expected-attention+tappa:alpha=inf", "snapkv:pool=max7:window=16"
//
// The budget (tokens per layer, or a compression ratio) is given beside the spec.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "kv/compressor.h"

namespace tappa::kv {

// The method and knobs of `spec` (unset knobs keep the method's defaults). Throws tappa::Error with
// one line naming the bad part and listing what is valid.
CompressorFlags parse_spec(std::string_view spec);
// parse_spec + the budget, validated: the options a KvCompressor takes.
CompressorOptions make_spec_options(std::string_view spec, std::optional<int> budget, std::optional<double> ratio);
// The keys a spec understands, "alpha, window, …" (for messages and --help).
std::string spec_keys();

}  // namespace tappa::kv
