// `tappa analyze` interrupted by SIGTERM (or SIGINT): it must stop after the current chunk of the
// forward pass, write nothing (a report already in the output folder stays exactly as it was, because
// reports are only ever replaced whole), say so on stderr and exit with 128 + the signal number.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "test_util.h"

namespace tappa {
namespace {

namespace fs = std::filesystem;

using tappa::test::slurp;

class AnalyzeInterrupted : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    TAPPA_REQUIRE_MODEL(test::default_model());
    dir_ = fs::temp_directory_path() / ("tappa_interrupt_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "out");
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_P(AnalyzeInterrupted, StopsCleanlyAndLeavesThePreviousReport) {
  const int sig = GetParam();
  // A report from an earlier run; an interrupted run must not touch it.
  const std::string previous = "{\"previous\": true}\n";
  std::ofstream(dir_ / "out" / "report.json") << previous;

  // The whole GPL-3 (about 8000 tokens): far longer than the time it takes to see the first progress
  // line, so the signal always lands during the forward pass.
  const std::string bin = test::binary_dir() + "/tappa", model = test::default_model(), out = (dir_ / "out").string();
  const std::string err_path = (dir_ / "stderr").string();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::execl(bin.c_str(), bin.c_str(), "analyze", "-m", model.c_str(), "-f", "/usr/share/common-licenses/GPL-3",
            "--max-tokens", "8192", "-t", "2", "-o", out.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Wait for the forward pass to start: the progress bar prints its first line when stderr is a file.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  while (slurp(err_path).find("tok") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(::kill(pid, sig), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  const std::string err = slurp(err_path);

  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << "; stderr: " << err;
  EXPECT_EQ(WEXITSTATUS(status), 128 + sig) << err;
  EXPECT_NE(err.find("analyze stopped by signal " + std::to_string(sig)), std::string::npos) << err;
  EXPECT_EQ(err.find("tappa: error"), std::string::npos) << err;
  EXPECT_EQ(slurp(dir_ / "out" / "report.json"), previous);
  EXPECT_FALSE(fs::exists(dir_ / "out" / "report.html"));
  // No temporary file is left behind either.
  for (const auto& e : fs::directory_iterator(dir_ / "out"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

INSTANTIATE_TEST_SUITE_P(Signals, AnalyzeInterrupted, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& info) { return info.param == SIGTERM ? std::string("SIGTERM") : std::string("SIGINT"); });

}  // namespace
}  // namespace tappa
