// Helpers shared by the libFuzzer targets.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace tappa::fuzz {

// GgufFile and Model only open paths (they map the file), so each input goes through a file. /dev/shm
// keeps that in memory; the name carries the pid so that parallel fuzzing jobs (-jobs=N) never share it.
inline const std::string& scratch_path(const char* stem) {
  static const std::string path = [stem] {
    const char* dir = std::getenv("TAPPA_FUZZ_TMP");
    if (!dir) dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/tappa_fuzz_" + stem + "_" + std::to_string(::getpid());
  }();
  return path;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();  // the fuzzer's own set-up failed: stop loudly rather than fuzz nothing
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

// Where the default model lives: $TAPPA_MODEL, else models/ under the source tree.
inline std::string default_model() {
  if (const char* m = std::getenv("TAPPA_MODEL")) return m;
  return std::string(TAPPA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace tappa::fuzz
