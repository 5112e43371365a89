// A progress bar on stderr for long work. On a terminal it redraws one line (count, percent, rate,
// time left); when stderr is a file or pipe it prints a line at every 10% so logs stay short.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "tappa/control.h"

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

// A library call's RunControl progress drawn as a Progress bar: the bar starts when the call first
// reports its total (progress(0, total) as it begins) and ends with finish() — or, with
// finish_at_total, as soon as the count reaches the total (one bar per pass of a multi-pass call;
// restart() names the next pass's bar).
class ProgressSink {
 public:
  ProgressSink(std::string label, std::string unit, bool enabled, bool finish_at_total = false);
  RunControl control(const CancelToken* cancel);
  void restart(std::string label);  // ends the current bar; the next report starts one named `label`
  void finish();

 private:
  void report(int64_t done, int64_t total);
  std::string label_, unit_;
  bool enabled_, finish_at_total_;
  std::unique_ptr<Progress> bar_;
};

}  // namespace tappa
