#include "cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace tappa {

Progress::Progress(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)), unit_(std::move(unit)), total_(std::max<int64_t>(total, 1)), enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_) finish();
}

void Progress::update(int64_t done) {
  done_ = std::min(done, total_);
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ > std::chrono::milliseconds(100)) {
      last_draw_ = now;
      draw(false);
    }
  } else {
    const int decile = static_cast<int>(10 * done_ / total_);
    if (decile != last_decile_ && decile < 10) {  // 100% is printed once, by finish()
      last_decile_ = decile;
      draw(false);
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

void Progress::draw(bool final) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = secs > 0 ? done_ / secs : 0.0;
  const double left = rate > 0 ? (total_ - done_) / rate : 0.0;
  const int width = 30, filled = static_cast<int>(width * done_ / total_);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %s (%3.0f%%) %.1f %s/s, %s %.0fs%s", tty_ ? "\r" : "", label_.c_str(),
               bar.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
               100.0 * done_ / total_, rate, unit_.c_str(), final ? "took" : "left", final ? secs : left,
               (tty_ && !final) ? "" : "\n");
  std::fflush(stderr);
}

ProgressSink::ProgressSink(std::string label, std::string unit, bool enabled, bool finish_at_total)
    : label_(std::move(label)), unit_(std::move(unit)), enabled_(enabled), finish_at_total_(finish_at_total) {}

RunControl ProgressSink::control(const CancelToken* cancel) {
  RunControl c;
  c.cancel = cancel;
  c.on_progress = [this](int64_t done, int64_t total) { report(done, total); };
  return c;
}

void ProgressSink::report(int64_t done, int64_t total) {
  if (!bar_) {
    bar_ = std::make_unique<Progress>(label_, total, unit_, enabled_);
    if (done == 0) return;  // the start: nothing drawn until work is done
  }
  bar_->update(done);
  if (finish_at_total_ && done >= total) finish();
}

void ProgressSink::restart(std::string label) {
  finish();
  label_ = std::move(label);
}

void ProgressSink::finish() {
  if (bar_) bar_->finish();
  bar_.reset();
}

}  // namespace tappa
