// Bad input through the real command line: every case must end with exactly one line
// "tappa: error: ..." on stderr that names the problem, and a non-zero exit — never a crash
// (signal), a hang, or a silent success.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

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

using tappa::test::slurp;

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

// Flags out of range, negative, absurd or of the wrong type: the parser (or the command, for budgets
// and method names) rejects them with one error line naming the flag.
TEST_F(CliHostile, BadFlagsGiveOneErrorLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"run -n -5 -p hi", "--n-predict"},
      {"run -c -1 -p hi", "--ctx-size"},
      {"run -c 99999999999 -p hi", "--ctx-size"},
      {"run -t 100000 -p hi", "--threads"},
      {"run -t -3 -p hi", "--threads"},
      {"run --temp -1 -p hi", "--temp"},
      {"run --top-p 7 -p hi", "--top-p"},
      {"run -n lots -p hi", "--n-predict"},
      // NaN slips through a plain CLI::Range (every comparison with NaN is false); infinities and
      // out-of-range numbers are refused the same way.
      {"run --temp nan -p hi", "--temp"},
      {"run --temp NaN -p hi", "--temp"},
      {"run --temp -nan -p hi", "--temp"},
      {"run --temp inf -p hi", "--temp"},
      {"run --temp -inf -p hi", "--temp"},
      {"run --top-p nan -p hi", "--top-p"},
      {"run --top-p -0.5 -p hi", "--top-p"},
      {"run --top-k -1 -p hi", "--top-k"},
      {"run -n -1 -p hi", "--n-predict"},
      {"run -b 0 -p hi", "--batch-size"},
      {"run --ratio nan --kv snapkv -p hi -n 1", "--ratio"},
      {"run --gamma nan --kv tappa --budget 8 -p hi -n 1", "--gamma"},
      {"run --alpha nan --kv tappa --budget 8 -p hi -n 1", "--alpha"},
      {"run --min-head-frac nan --kv tappa-head --budget 8 -p hi -n 1", "--min-head-frac"},
      {"prune-order --beta nan --scores x.json", "--beta"},
      {"run --no-such-flag -p hi", "--no-such-flag"},
      {"run --kv tappa --budget 0 -p hi -n 1", "--budget must be a positive number"},
      {"run --kv tappa --budget -5 -p hi -n 1", "--budget must be a positive number"},
      {"run --kv tappa --budget 99999999999 -p hi -n 1", "--budget"},
      {"compress --kv tappa --budget 0 -p hi", "--budget must be a positive number"},
      {"run --kv no-such-method --budget 8 -p hi -n 1", "unknown KV compression method 'no-such-method'"},
      {"analyze --max-tokens 0 -p hi", "--max-tokens"},
      {"analyze --rows -1 -p hi", "--rows"},
      {"analyze --swap-channels 1 -p hi", "--swap-channels"},
      {"tokenize --no-such-flag", "--no-such-flag"},
      {"no-such-command", "subcommand"},
  };
  for (const auto& [args, needle] : cases) {
    SCOPED_TRACE(args);
    expect_clean_error(run_tappa(args), needle);
  }
}

TEST_F(CliHostile, NoCommandAtAll) {
  const RunResult r = run_tappa("");
  expect_clean_error(r, "subcommand");
}

// Empty text is bad input for every command that needs text, and the message says where it came from.
TEST_F(CliHostile, EmptyText) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  std::ofstream(path("empty.txt")).flush();
  const std::string m = " -m " + test::default_model();
  expect_clean_error(run_tappa("run" + m + " -p '' -n 2"), "the prompt is empty");
  expect_clean_error(run_tappa("run" + m + " -f " + path("empty.txt") + " -n 2"), "the prompt is empty");
  expect_clean_error(run_tappa("analyze" + m + " -p '' -o " + path("out")), "the text given with -p is empty");
  expect_clean_error(run_tappa("analyze" + m + " -f " + path("empty.txt") + " -o " + path("out")),
                     path("empty.txt") + ": the text is empty");
  expect_clean_error(run_tappa("compress" + m + " --kv tappa --budget 8 -f " + path("empty.txt")), "at least 2 tokens");
  EXPECT_FALSE(fs::exists(path("out") + "/report.json"));
  // Tokenizing nothing is not an error: it is zero tokens.
  const RunResult t = run_tappa("tokenize" + m + " -p '' --ids");
  EXPECT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out.find_first_not_of(" \n"), std::string::npos) << t.out;
}

// A checkpoint whose settings match but whose numbers lie (hand-edited, or from another version) is
// refused with one line naming it. Before the check, calibrate's per-layer sums were indexed by layer
// (a one-element bi_sum with windows_done 0 wrote past its end) and a wrongly typed field escaped as
// a bare JSON exception without the file name.
TEST_F(CliHostile, LyingCheckpointsAreOneLineErrors) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  std::string text;
  for (int i = 0; i < 12; ++i) text += "The quick brown fox jumps over the lazy dog near the river bank. ";
  std::ofstream(path("text.txt")) << text;
  const std::string m = " -m " + test::default_model() + " -t 2 -q -f " + path("text.txt");
  auto rewrite = [](const std::string& file, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(slurp(file));
    edit(j);
    std::ofstream(file, std::ios::trunc) << j.dump();
  };

  const std::string cal = "calibrate" + m + " --window 16 --stride 16 -o " + path("scores.json");
  const RunResult first = run_tappa(cal);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string cal_ckpt = path("scores.json.ckpt.json");
  ASSERT_TRUE(fs::exists(cal_ckpt));
  const std::string good = slurp(cal_ckpt);
  rewrite(cal_ckpt, [](nlohmann::json& j) {
    j["windows_done"] = 0;
    j["bi_sum"] = {0.5};
  });
  expect_clean_error(run_tappa(cal + " --resume"), cal_ckpt + ": not a valid checkpoint");
  std::ofstream(cal_ckpt, std::ios::trunc) << good;
  rewrite(cal_ckpt, [](nlohmann::json& j) { j["windows_done"] = 1000000; });
  expect_clean_error(run_tappa(cal + " --resume"), cal_ckpt + ": not a valid checkpoint");
  std::ofstream(cal_ckpt, std::ios::trunc) << good;
  rewrite(cal_ckpt, [](nlohmann::json& j) { j["qsim_sum"] = "many"; });
  expect_clean_error(run_tappa(cal + " --resume"), cal_ckpt + ": not a valid checkpoint");

  const std::string ppl = "ppl" + m + " -c 32 -o " + path("ppl.json");
  const RunResult p = run_tappa(ppl);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const std::string ppl_ckpt = path("ppl.json.ckpt.json");
  ASSERT_TRUE(fs::exists(ppl_ckpt));
  rewrite(ppl_ckpt, [](nlohmann::json& j) { j["chunks"] = {{1.0, "x"}}; });
  expect_clean_error(run_tappa(ppl + " --resume"), ppl_ckpt + ": not a valid checkpoint");
}

// Bytes that are not UTF-8 are text like any other: the tokenizer reads them leniently (as llama.cpp
// does, U+FFFD for each bad byte), and every command runs to the end.
TEST_F(CliHostile, NonUtf8TextIsAccepted) {
  TAPPA_REQUIRE_MODEL(test::default_model());
  const std::string bad = "\xff\xfe\xc3\x28 caf\xe9 \x80\x80 \xf0\x28\x8c\x28 \xed\xa0\x80 end";
  std::ofstream(path("bad.txt"), std::ios::binary) << bad;
  const std::string m = " -m " + test::default_model();
  const RunResult tok = run_tappa("tokenize" + m + " -f " + path("bad.txt") + " --ids");
  EXPECT_EQ(tok.exit_code, 0) << tok.err;
  EXPECT_FALSE(tok.signaled);
  EXPECT_GT(std::count(tok.out.begin(), tok.out.end(), ' '), 5) << tok.out;
  const RunResult run = run_tappa("run" + m + " -f " + path("bad.txt") + " -n 4 -t 2");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_FALSE(run.signaled);
}

// A model whose tensors do not fit the architecture, through the command line.
TEST_F(CliHostile, WrongTensorShape) {
  auto md = llama_metadata(true);
  std::vector<float> zeros(32 * 8, 0.0f);
  // token_embd must be [n_embd = 32, n_vocab = 4]; this one is [32, 8].
  write_gguf(path("shape.gguf"), md, {{"token_embd.weight", {32, 8}, TensorType::F32, zeros.data(), zeros.size() * 4}});
  expect_clean_error(run_tappa("run -m " + path("shape.gguf") + " -p hi -n 1"), path("shape.gguf"));
  expect_clean_error(run_tappa("run -m " + path("shape.gguf") + " -p hi -n 1"), "has 8 rows but the tokenizer has 4");
}

// A 1 TiB model (a sparse file: real header, the data a hole) is refused before its weights are read.
TEST_F(CliHostile, ModelLargerThanMemory) {
  std::vector<uint8_t> b;
  auto put = [&](const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) { u64(s.size()); put(s.data(), s.size()); };
  put("GGUF", 4);
  u32(3);
  u64(1);
  u64(1);
  str("general.architecture");
  u32(8);
  str("llama");
  str("token_embd.weight");
  u32(2);
  u64(4096);
  u64(uint64_t{1} << 26);  // 4096 x 2^26 F32 = 1 TiB
  u32(0);
  u64(0);
  while (b.size() % 32) b.push_back(0);
  std::ofstream(path("huge.gguf"), std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (::truncate(path("huge.gguf").c_str(), static_cast<off_t>(b.size() + (uint64_t{1} << 40))) != 0)
    GTEST_SKIP() << "this filesystem cannot hold a 1 TiB sparse file";
  const RunResult r = run_tappa("run -m " + path("huge.gguf") + " -p hi -n 1");
  expect_clean_error(r, path("huge.gguf") + ": the model's tensors take 1024.0 GiB");
}

}  // namespace
}  // namespace tappa
