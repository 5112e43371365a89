#include "cli/common.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tappa/error.h"

namespace tappa::cli {

namespace fs = std::filesystem;

namespace {
constexpr const char* kDefaultModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string default_model_path() {
  if (const char* env = std::getenv("TAPPA_MODEL"); env && *env) return env;
  if (fs::exists(kDefaultModel)) return kDefaultModel;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path beside = exe.parent_path().parent_path() / kDefaultModel;
    if (fs::exists(beside)) return beside.string();
  }
  return kDefaultModel;
}

CLI::Option* add_model_option(CLI::App& app, std::string& path) {
  path = default_model_path();
  return app.add_option("-m,--model", path, "GGUF model file (default: the bundled SmolLM2-135M-Instruct Q4_1; "
                                            "$TAPPA_MODEL overrides)")
      ->capture_default_str();
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CLI::Validator finite_range(double lo, double hi) {
  const std::string range = "[" + std::to_string(lo) + " - " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi](std::string& input) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(input, v)) return "Value " + input + " is not a number";
        if (std::isnan(v) || v < lo || v > hi)
          return "Value " + input + " not in range " + std::to_string(lo) + " to " + std::to_string(hi);
        return std::string();
      },
      range, "FINITE_RANGE");
}

std::string read_prompt(const std::string& prompt, const std::string& file) {
  if (!prompt.empty() && !file.empty()) throw Error("give either -p/--prompt or -f/--file, not both");
  if (!file.empty()) return read_file(file);
  return prompt;
}

nlohmann::json read_checkpoint(const std::string& path, const nlohmann::json& settings, const std::string& which) {
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not a valid checkpoint (" + e.what() + ")");
  }
  if (!c.is_object() || !c.contains("settings") || c["settings"] != settings)
    throw Error(path + ": checkpoint was written with other settings (" + which + ")");
  return c;
}

}  // namespace tappa::cli
