// The eval-kv grid's internals (the public part is include/tappa/eval.h): a method spec parsed into
// the compressor's knobs, and the cache-type axis.
#pragma once
#include <string>
#include <string_view>

#include "kv/compressor.h"
#include "tappa/eval.h"
#include "tappa/kv_cache.h"

namespace tappa::evalkv {

// "name[:key=value]…", e.g. "tappa:alpha=1", "snapkv:window=16:pool=max7". Keys (each a
// CompressorFlags knob, the same as the run/compress flag of that name): alpha, window, gamma, pool,
// cascading, decode-evict, decode-evict-every, n-sink, streaming-first, h2o-rows, h2o-official-mask,
// snapkv-mean, pyramid-beta, tau, min-head-frac, ea-n-future, ea-covariance, ea-vnorm, ea-epsilon,
// ea-stat-rows, seed (booleans: 0 or 1). An unknown key is a one-line error. The label is the spec as
// written (it names the row in every table).
struct MethodSpec {
  std::string label;
  kv::CompressorFlags flags;
  bool is_full() const { return flags.method == "fullkv"; }
};
MethodSpec parse_method_spec(std::string_view spec);

// A KV cache storage spec of the --cache-types axis: "TYPE" (K and V), "K/V" (e.g. "q8_0/f16"), with
// an optional ":rot=auto|on|off" (default auto). Types: f32, f16, bf16, q8_0, q4_0.
KvCacheType parse_cache_spec(std::string_view spec);

}  // namespace tappa::evalkv
