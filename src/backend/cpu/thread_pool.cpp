#include "backend/cpu/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TAPPA_CPU_RELAX() _mm_pause()
#else
#define TAPPA_CPU_RELAX() ((void)0)
#endif

namespace tappa::cpu {

namespace {
// Waiting, in three stages. A worker between two ops of one token (microseconds apart) spins on the
// generation with pause (kSpinIterations), then checks it between sched_yield calls (kYieldIterations),
// then sleeps on the condition variable. The yields matter on a machine with more runnable threads
// than cores (a busy box, CI): a worker spinning with pause holds its core for the rest of its time
// slice, which the thread it waits for may need — at 2 threads beside two compilers the default model
// fell from ~350 to ~2.5-90 tok/s, most of the time in this loop. A yield with nothing else runnable
// returns at once (~1 us), so on an idle machine the stages cost about what the old pure spin did.
constexpr int kSpinIterations = 1000;
constexpr int kYieldIterations = 300;
}  // namespace

int default_thread_count() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(n_threads_ - 1);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations + kYieldIterations; ++spin) {
      if (spin < kSpinIterations) {
        TAPPA_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    (*job_)(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1, std::memory_order_release);
  {
    // Taking the lock orders the generation bump against a worker that is about to sleep.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  fn(0);
  // The workers' parts: spin, then yield between checks (see kSpinIterations: past the spin a worker is
  // most likely not running, and the core is better handed over than held).
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0;) {
    if (spin < kSpinIterations) {
      ++spin;
      TAPPA_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
}

}  // namespace tappa::cpu
