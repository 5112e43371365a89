// Gemma 3 metadata rules on small hand-written GGUF files (no weights needed: the configuration is
// read, and rejected, before any tensor is bound): the sliding-window pattern from a bool array, from
// a period, or by default, and one clear error for each malformed key.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "tappa/error.h"
#include "tappa/gguf.h"
#include "tappa/model.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;
using Meta = std::vector<std::pair<std::string, GgufValue>>;

Meta base_meta(int n_layer) {
  return {{"general.architecture", GgufValue::str("gemma3")},
          {"gemma3.block_count", GgufValue::u32(n_layer)},
          {"gemma3.embedding_length", GgufValue::u32(64)},
          {"gemma3.feed_forward_length", GgufValue::u32(128)},
          {"gemma3.attention.head_count", GgufValue::u32(2)},
          {"gemma3.attention.head_count_kv", GgufValue::u32(1)},
          {"gemma3.attention.key_length", GgufValue::u32(32)},
          {"gemma3.attention.value_length", GgufValue::u32(32)},
          {"gemma3.attention.sliding_window", GgufValue::u32(16)}};
}

// Loads a file holding `meta` only; returns the error message ("" if it loaded, which it cannot:
// the tokenizer keys are missing, so a config that passes fails later on "tokenizer.ggml.model").
std::string load_error(const Meta& meta) {
  const fs::path p = fs::temp_directory_path() / ("tappa_gemma_cfg_" + std::to_string(::getpid()) + ".gguf");
  // One small tensor per layer: the loader rejects a block_count larger than the tensor count.
  int64_t n_layer = 0;
  for (const auto& [k, v] : meta)
    if (k == "gemma3.block_count") n_layer = v.as_i64(k);
  static const float zeros[4] = {0, 0, 0, 0};
  std::vector<GgufTensorToWrite> tensors;
  for (int64_t l = 0; l < n_layer; ++l) {
    GgufTensorToWrite t;
    t.name = "dummy." + std::to_string(l);
    t.shape = {4};
    t.data = zeros;
    t.n_bytes = sizeof(zeros);
    tensors.push_back(t);
  }
  write_gguf(p.string(), meta, tensors);
  std::string msg;
  try {
    Model::load(p.string());
  } catch (const Error& e) {
    msg = e.what();
  }
  fs::remove(p);
  return msg;
}

TEST(GemmaConfig, ValidPatternsPassTheConfigStage) {
  // Each of these gets past the Gemma configuration and stops at the (absent) tokenizer.
  Meta by_default = base_meta(12);
  EXPECT_NE(load_error(by_default).find("tokenizer.ggml.model"), std::string::npos) << load_error(by_default);
  Meta period = base_meta(12);
  period.emplace_back("gemma3.attention.sliding_window_pattern", GgufValue::u32(4));
  EXPECT_NE(load_error(period).find("tokenizer.ggml.model"), std::string::npos) << load_error(period);
  Meta arr = base_meta(3);
  arr.emplace_back("gemma3.attention.sliding_window_pattern",
                   GgufValue::array(GgufType::BOOL, {GgufValue::boolean(true), GgufValue::boolean(true), GgufValue::boolean(false)}));
  EXPECT_NE(load_error(arr).find("tokenizer.ggml.model"), std::string::npos) << load_error(arr);
}

TEST(GemmaConfig, MalformedKeysAreOneClearError) {
  Meta short_array = base_meta(3);
  short_array.emplace_back("gemma3.attention.sliding_window_pattern",
                           GgufValue::array(GgufType::BOOL, {GgufValue::boolean(true)}));
  const std::string e1 = load_error(short_array);
  EXPECT_NE(e1.find("sliding_window_pattern"), std::string::npos) << e1;
  EXPECT_NE(e1.find("1 entries for 3 layers"), std::string::npos) << e1;

  Meta bad_period = base_meta(3);
  bad_period.emplace_back("gemma3.attention.sliding_window_pattern", GgufValue::u32(1000));
  EXPECT_NE(load_error(bad_period).find("implausible"), std::string::npos) << load_error(bad_period);

  Meta bad_base = base_meta(3);
  bad_base.emplace_back("gemma3.rope.freq_base_swa", GgufValue::f32(-1.0f));
  EXPECT_NE(load_error(bad_base).find("freq_base_swa"), std::string::npos) << load_error(bad_base);

  Meta bad_cap = base_meta(3);
  bad_cap.emplace_back("gemma3.final_logit_softcapping", GgufValue::f32(-3.0f));
  EXPECT_NE(load_error(bad_cap).find("softcapping"), std::string::npos) << load_error(bad_cap);
}

}  // namespace
}  // namespace tappa
