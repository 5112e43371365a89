// Bad input through the real command line: every case must end with exactly one line
// "tappa: error: ..." on stderr that names the problem, and a non-zero exit — never a crash
// (signal), a hang, or a silent success.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tappa/gguf.h"
#include "test_util.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code = -1;
  bool signaled = false;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

RunResult run_tappa(const std::string& args) {
  const fs::path dir = fs::temp_directory_path() / ("tappa_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string cmd = "timeout 120 " + test::binary_dir() + "/tappa " + args + " >" + (dir / "out").string() +
                          " 2>" + (dir / "err").string() + " </dev/null";
  const int status = std::system(cmd.c_str());
  RunResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status) || r.exit_code >= 124) r.signaled = true;  // timeout(1) reports 124/137
  r.out = slurp(dir / "out");
  r.err = slurp(dir / "err");
  return r;
}

// One error line, naming the problem; non-zero exit; no crash.
void expect_clean_error(const RunResult& r, const std::string& needle) {
  EXPECT_FALSE(r.signaled) << "crashed or hung; stderr: " << r.err;
  EXPECT_NE(r.exit_code, 0) << "stderr: " << r.err;
  EXPECT_EQ(r.err.rfind("tappa: error: ", 0), 0u) << "stderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "expected one line, got: " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
}

class CliHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tappa_hostile_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A minimal llama-architecture header with tokenizer keys, but no tensors.
  std::vector<std::pair<std::string, GgufValue>> llama_metadata(bool with_tokenizer, const std::string& arch = "llama") {
    std::vector<std::pair<std::string, GgufValue>> md;
    auto str = [](const std::string& s) { return GgufValue{GgufType::STRING, s}; };
    auto u32 = [](uint64_t v) { return GgufValue{GgufType::UINT32, v}; };
    md.emplace_back("general.architecture", str(arch));
    md.emplace_back(arch + ".block_count", u32(1));
    md.emplace_back(arch + ".embedding_length", u32(32));
    md.emplace_back(arch + ".feed_forward_length", u32(64));
    md.emplace_back(arch + ".attention.head_count", u32(2));
    md.emplace_back(arch + ".context_length", u32(64));
    if (with_tokenizer) {
      md.emplace_back("tokenizer.ggml.model", str("gpt2"));
      md.emplace_back("tokenizer.ggml.pre", str("default"));
      GgufArray toks{GgufType::STRING, {}};
      for (int i = 0; i < 4; ++i) toks.values.push_back(str(std::string(1, static_cast<char>('a' + i))));
      md.emplace_back("tokenizer.ggml.tokens", GgufValue{GgufType::ARRAY, toks});
      md.emplace_back("tokenizer.ggml.merges", GgufValue{GgufType::ARRAY, GgufArray{GgufType::STRING, {}}});
    }
    return md;
  }

  fs::path dir_;
};

TEST_F(CliHostile, MissingFile) { expect_clean_error(run_tappa("info -m " + path("nope.gguf")), "cannot open"); }

TEST_F(CliHostile, DirectoryAsModel) { expect_clean_error(run_tappa("info -m " + dir_.string()), dir_.string()); }

TEST_F(CliHostile, BadMagic) {
  std::ofstream(path("bad.gguf"), std::ios::binary) << "GGML this is not a gguf file at all, just text........";
  expect_clean_error(run_tappa("info -m " + path("bad.gguf")), "magic");
}

TEST_F(CliHostile, EmptyFile) {
  std::ofstream(path("empty.gguf"), std::ios::binary).flush();
  expect_clean_error(run_tappa("info -m " + path("empty.gguf")), "empty.gguf");
}

TEST_F(CliHostile, TruncatedRealModel) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  for (size_t cut : {size_t{100}, size_t{3000000}, size_t{60000000}}) {
    std::ifstream in(test::default_model(), std::ios::binary);
    std::string buf(cut, '\0');
    in.read(buf.data(), static_cast<std::streamsize>(cut));
    std::ofstream(path("trunc.gguf"), std::ios::binary).write(buf.data(), static_cast<std::streamsize>(cut));
    expect_clean_error(run_tappa("info -m " + path("trunc.gguf")), "trunc");
  }
}

TEST_F(CliHostile, AbsurdTensorCount) {
  write_gguf(path("t.gguf"), llama_metadata(true), {});
  std::fstream f(path("t.gguf"), std::ios::in | std::ios::out | std::ios::binary);
  const uint64_t absurd = uint64_t{1} << 60;
  f.seekp(8);  // magic (4) + version (4), then tensor_count (u64)
  f.write(reinterpret_cast<const char*>(&absurd), 8);
  f.close();
  expect_clean_error(run_tappa("info -m " + path("t.gguf")), "t.gguf");
}

TEST_F(CliHostile, UnknownArchitecture) {
  write_gguf(path("arch.gguf"), llama_metadata(true, "mamba9"), {});
  expect_clean_error(run_tappa("info -m " + path("arch.gguf")), "unsupported architecture 'mamba9'");
}

TEST_F(CliHostile, MissingTokenizerKeys) {
  write_gguf(path("notok.gguf"), llama_metadata(false), {});
  expect_clean_error(run_tappa("info -m " + path("notok.gguf")), "tokenizer.ggml");
}

TEST_F(CliHostile, MissingTensor) {
  write_gguf(path("notensor.gguf"), llama_metadata(true), {});
  expect_clean_error(run_tappa("info -m " + path("notensor.gguf")), "missing tensor");
}

TEST_F(CliHostile, PromptLongerThanContext) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  std::string words;
  for (int i = 0; i < 100; ++i) words += "word ";
  std::ofstream(path("long.txt")) << words;
  expect_clean_error(run_tappa("run -m " + test::default_model() + " -c 32 -n 4 -f " + path("long.txt")), "exceeds the context");
}

TEST_F(CliHostile, MissingPromptFile) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  expect_clean_error(run_tappa("run -m " + test::default_model() + " -f " + path("absent.txt")), "absent.txt");
}

TEST_F(CliHostile, NegativeTokenCountIsRejectedByTheParser) {
  const RunResult r = run_tappa("run -n -5 -p hi");
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.err.empty());
}

}  // namespace
}  // namespace tappa
