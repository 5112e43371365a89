// A progress bar on stderr for long work. On a terminal it redraws one line (count, percent, rate,
// time left); when stderr is a file or pipe it prints a line at every 10% so logs stay short.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace tappa {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "tok", bool enabled = true);
  ~Progress();
  void update(int64_t done);  // absolute count
  void finish();

 private:
  void draw(bool final);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool enabled_, tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace tappa
