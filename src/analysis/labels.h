// The attention-pattern labels shared by the measured classification (patterns.h) and the
// theory-based prediction (rope_channels.h), so that "measured" and "predicted" can be compared
// with ==. Names are the paper's pattern names, spelled as the CLI and reports print them.
#pragma once
#include <array>
#include <string>
#include <string_view>

#include "tappa/error.h"

namespace tappa::analysis {

enum class PatternLabel {
  reaccess,             // vertical stripes: the same keys every step (attention sinks included), Thm 5.1
  sequential,           // one diagonal: a fixed relative offset (previous token, local window), Thm 5.2
  periodic_sequential,  // several parallel diagonals with a small spacing, Thm 5.3
  seasonal,             // periodic re-visits with a longer period L (keys near p-L, p-2L, ...), Thm 5.4
  unpredictable,        // attended keys jump from step to step, no structure (retrieval-like), Prop 4.1
  mixed,                // more than one predictable signal is strong at once (e.g. sink + diagonal)
};

inline constexpr std::array<PatternLabel, 6> kAllPatternLabels = {
    PatternLabel::reaccess,      PatternLabel::sequential,    PatternLabel::periodic_sequential,
    PatternLabel::seasonal,      PatternLabel::unpredictable, PatternLabel::mixed};

inline std::string_view label_name(PatternLabel l) {
  switch (l) {
    case PatternLabel::reaccess: return "reaccess";
    case PatternLabel::sequential: return "sequential";
    case PatternLabel::periodic_sequential: return "periodic_sequential";
    case PatternLabel::seasonal: return "seasonal";
    case PatternLabel::unpredictable: return "unpredictable";
    case PatternLabel::mixed: return "mixed";
  }
  return "?";
}

// Inverse of label_name; throws tappa::Error naming the valid labels for anything else.
inline PatternLabel parse_label(std::string_view name) {
  for (PatternLabel l : kAllPatternLabels)
    if (label_name(l) == name) return l;
  std::string msg = "unknown attention pattern label '" + std::string(name) + "' (expected one of:";
  for (PatternLabel l : kAllPatternLabels) msg += " " + std::string(label_name(l));
  throw Error(msg + ")");
}

}  // namespace tappa::analysis
