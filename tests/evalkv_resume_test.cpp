// issue #9: an eval-kv run killed with SIGTERM midway resumes and ends with the same results as an
// uninterrupted run (results.json byte-identical once the timing fields are removed).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;

std::vector<std::string> grid_args(const std::string& out) {
  return {tappa::test::binary_dir() + "/tappa", "eval-kv", "-m", tappa::test::default_model(), "--tasks", "passkey,vt",
          "--lengths", "320", "--samples", "2", "--methods", "fullkv,snapkv,tappa", "--budgets", "64,128", "-t", "1",
          "--no-progress", "--data-dir", tappa::test::data_dir(), "-o", out};
}

pid_t spawn(std::vector<std::string> args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int fd = ::open("/dev/null", O_WRONLY);  // keep the test log short
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

nlohmann::json load(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// Timing fields differ between runs by nature; everything else must not.
void strip_timing(nlohmann::json& j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end();) {
      const std::string& k = it.key();
      if (k == "seconds" || k == "prefill_seconds") it = j.erase(it);
      else {
        strip_timing(*it);
        ++it;
      }
    }
  } else if (j.is_array()) {
    for (auto& e : j) strip_timing(e);
  }
}

TEST(EvalKvResume, SigtermMidwayThenResumeEqualsUninterruptedRun) {
  TAPPA_REQUIRE_MODEL(tappa::test::default_model());
  // The passkey and vt haystacks are the essays of the shared evaluation data.
  if (!fs::exists(fs::path(tappa::test::data_dir()) / "ruler" / "PaulGrahamEssays.json"))
    GTEST_SKIP() << "evaluation data not found under " << tappa::test::data_dir();
  const std::string bin = tappa::test::binary_dir() + "/tappa";
  ASSERT_TRUE(fs::exists(bin)) << bin;
  const fs::path root = fs::temp_directory_path() / ("tappa_evalkv_resume_" + std::to_string(getpid()));
  fs::remove_all(root);
  const std::string a = (root / "a").string(), b = (root / "b").string();

  ASSERT_EQ(wait_exit(spawn(grid_args(a))), 0);
  nlohmann::json full = load(a + "/results.json");
  const size_t total = full["cells"].size();
  ASSERT_EQ(total, 2u * 2u * 5u);  // 2 tasks × 2 samples × (fullkv + 2 methods × 2 budgets)

  // Interrupted run: SIGTERM as soon as the first checkpoint holds a cell.
  const pid_t pid = spawn(grid_args(b));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  const std::string rpath = b + "/results.json";
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!fs::exists(rpath)) continue;
    try {
      if (!load(rpath)["cells"].empty()) {
        kill(pid, SIGTERM);
        killed = true;
        break;
      }
    } catch (const std::exception&) {
      // Written atomically, so a parse error would be a bug: the next poll fails the test below.
    }
  }
  ASSERT_TRUE(killed);
  EXPECT_EQ(wait_exit(pid), 128 + SIGTERM);  // clean exit with the shell's code for SIGTERM
  nlohmann::json partial = load(rpath);
  EXPECT_FALSE(partial["complete"].get<bool>());
  EXPECT_GT(partial["cells"].size(), 0u);
  EXPECT_LT(partial["cells"].size(), total);

  // Without --resume the existing run is protected.
  EXPECT_NE(wait_exit(spawn(grid_args(b))), 0);
  auto resume = grid_args(b);
  resume.push_back("--resume");
  ASSERT_EQ(wait_exit(spawn(resume)), 0);
  nlohmann::json resumed = load(rpath);
  EXPECT_TRUE(resumed["complete"].get<bool>());
  strip_timing(full);
  strip_timing(resumed);
  EXPECT_EQ(full.dump(1), resumed.dump(1));
  fs::remove_all(root);
}

}  // namespace
