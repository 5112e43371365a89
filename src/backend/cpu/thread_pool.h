// A fixed pool of worker threads that run one parallel loop at a time. Workers are created once and
// live as long as the pool: a forward pass issues hundreds of small parallel loops per token, so
// spawning threads per op (or allocating per call) would dominate decode time. Between loops a worker
// spins briefly (the next op usually follows within microseconds) and then sleeps on a condition
// variable so an idle tappa process does not burn CPU.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tappa::cpu {

class ThreadPool {
 public:
  // n_threads counts the calling thread: a pool of 1 runs everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index) once on each of the size() threads (thread 0 is the caller) and returns
  // when all have finished. fn must split its work by thread_index itself.
  void run(const std::function<void(int)>& fn);

  // Same, for any callable, without allocating: the std::function holds only a pointer to fn, which
  // fits its inline buffer (a lambda with many captures would be copied to the heap on every call,
  // hundreds of times per generated token).
  template <class F>
  void run_each(F& fn) {
    F* p = &fn;
    run([p](int t) { (*p)(t); });
  }

  // Splits [0, n) into contiguous chunks, one per thread, and calls fn(begin, end) for each non-empty
  // chunk. Chunk boundaries are multiples of `grain` (except the last), so callers can keep SIMD
  // blocks or cache tiles whole. Does not allocate.
  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    grain = grain < 1 ? 1 : grain;
    const int64_t n_grains = (n + grain - 1) / grain;
    const int threads = static_cast<int>(n_grains < n_threads_ ? n_grains : n_threads_);
    if (threads <= 1) {
      fn(int64_t{0}, n);
      return;
    }
    auto body = [&](int t) {
      if (t >= threads) return;
      const int64_t g0 = n_grains * t / threads, g1 = n_grains * (t + 1) / threads;
      const int64_t b = g0 * grain, e = g1 * grain < n ? g1 * grain : n;
      if (b < e) fn(b, e);
    };
    run_each(body);
  }

 private:
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// Default thread count: the number of hardware threads, at least 1.
int default_thread_count();

}  // namespace tappa::cpu
