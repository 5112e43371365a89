// Helpers shared by the tests: where the source tree, the default model and the shared data live.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tappa::test {

inline std::string source_dir() { return TAPPA_SOURCE_DIR; }
inline std::string binary_dir() { return TAPPA_BINARY_DIR; }

// The default model fetched by scripts/fetch_model.sh ($TAPPA_MODEL overrides).
inline std::string default_model() {
  if (const char* env = std::getenv("TAPPA_MODEL"); env && *env) return env;
  return source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// ../shared/data beside the checkout ($TAPPA_DATA_DIR overrides).
inline std::string data_dir() {
  if (const char* env = std::getenv("TAPPA_DATA_DIR"); env && *env) return env;
  return source_dir() + "/../shared/data";
}

inline bool exists(const std::string& p) { return std::filesystem::exists(p); }

// The whole file as bytes ("" when it cannot be read: the tests then fail on its contents).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace tappa::test

#define TAPPA_REQUIRE_MODEL(path)                                                                  \
  do {                                                                                             \
    if (!tappa::test::exists(path)) GTEST_SKIP() << "model " << (path) << " not found: run scripts/fetch_model.sh"; \
  } while (0)
