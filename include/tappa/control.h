// Per-call control of long work: a cancellation token and a progress callback, passed by the caller
// to each call that may take long (a prefill, an analysis, an evaluation grid). Library code never
// polls a process-wide flag and never prints: cancelling one request leaves every other one running,
// and the program (the CLI, a server, a notebook) draws its own progress.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>

namespace tappa {

// Set from any thread (or from a signal handler: the flag is a lock-free atomic); the work checks it
// between steps and stops with Error(ErrorCode::cancelled).
class CancelToken {
 public:
  void cancel() { flag_.store(true, std::memory_order_relaxed); }
  void reset() { flag_.store(false, std::memory_order_relaxed); }
  bool cancelled() const { return flag_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> flag_{false};
};

struct RunControl {
  const CancelToken* cancel = nullptr;
  // Called from the calling thread with the units done so far and the total (units are the call's:
  // layer passes of a forward, tokens of an analysis, cells of a grid).
  std::function<void(int64_t done, int64_t total)> on_progress;

  bool cancelled() const { return cancel != nullptr && cancel->cancelled(); }
  void progress(int64_t done, int64_t total) const {
    if (on_progress) on_progress(done, total);
  }
};

}  // namespace tappa
