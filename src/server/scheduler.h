// Continuous batching for `tappa serve`: one scheduler thread owns the engine and steps every running
// request together (tappa::step_all: one Engine::decode per step, each weight read once for all of
// them, new prompts riding in the same pass); HTTP handler threads submit jobs and wait on them or
// stream their text. Admission control keeps the KV memory the running jobs may hold under a cap:
// a job is admitted when its estimate fits beside the reservations of the running ones, else it
// waits in a bounded queue (FIFO) until memory frees or its queue deadline passes (HTTP 503).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "tappa/control.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/generate.h"
#include "tappa/server.h"

namespace tappa::server {

// A refusal that maps to an HTTP status (400 bad request, 413 too large, 503 busy).
struct Refusal {
  int status = 503;
  std::string type;      // OpenAI error type: "invalid_request_error", "server_busy", …
  std::string message;
  int retry_after = 0;   // seconds, for 503
};

// One generation (a choice of a request). The submitter fills the first block, then only reads the
// guarded block under Scheduler::mutex() and sets `cancel`.
struct Job {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  size_t reserve_bytes = 0;   // KV memory admission reserves for it (estimate_kv_bytes)
  size_t full_kv_bytes = 0;   // what its cache would hold uncompressed at the end (usage)
  bool stream = false;        // the handler takes `text` as it comes
  std::condition_variable* cv = nullptr;  // the waiting handler's; notified on every change

  // Guarded by the scheduler's mutex.
  enum class State { queued, running, done } state = State::queued;
  std::string text;           // released text the handler has not taken yet
  GenerateResult result;      // when done (and no error)
  std::optional<Refusal> error;  // when done with an error
  std::chrono::steady_clock::time_point queued_at, started_at, finished_at;
  size_t kv_bytes_peak = 0;   // the most its cache held (sampled after every step)

  std::atomic<bool> cancel{false};  // set by the handler when the client is gone
};

// SchedulerOptions: include/tappa/server.h.

// Counters for /metrics (a consistent snapshot).
struct SchedulerStats {
  int64_t jobs_submitted = 0, jobs_finished = 0, jobs_cancelled = 0, jobs_failed = 0;
  int64_t rejected_queue_full = 0, rejected_queue_timeout = 0, rejected_too_large = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;
  int64_t steps = 0;
  double step_seconds = 0;
  int running = 0, queued = 0;
  size_t kv_bytes_held = 0, kv_bytes_reserved = 0, kv_bytes_held_max = 0, kv_cap = 0;
  int64_t kv_compressed_jobs = 0, kv_evicted_rows = 0, kv_estimate_misses = 0;
  double generated_tokens_per_s = 0, prompt_tokens_per_s = 0;  // over the last ~10 s
};

// The KV memory a job may hold at most, from its prompt length, max_tokens and KV method (what
// admission reserves). Exact for fullkv (the scheduler reserves the cache's rows up front); for a
// compressing method a bound from the budget (peak of the one-pass prefill: the compressed layers plus
// the layer being computed; then the cache's 1.5x growth while decoding). Throws Error(bad_input) on a
// bad KV spec or budget.
size_t estimate_kv_bytes(const Model& model, int n_prompt, const GenerateOptions& options);
// What fullkv holds for n tokens (every layer, every KV head, K and V in fp32).
size_t full_kv_bytes(const Model& model, int64_t n_tokens);

class Scheduler {
 public:
  Scheduler(Engine& engine, SchedulerOptions options);
  ~Scheduler();  // stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues the jobs of one request, all or none. Throws Refusal (413 when one can never fit the cap,
  // 503 when the queue is full or the server stops).
  void submit(std::span<const std::shared_ptr<Job>> jobs);
  // The handler saw its client go: the job ends (cancelled) and its sequence is freed at the next step.
  void cancel(Job& job);
  // Ends every job (cancelled) and the scheduler thread.
  void stop();

  std::mutex& mutex() { return mu_; }
  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return opts_; }

 private:
  struct Running;
  void loop();
  void finish(Running& r, std::unique_lock<std::mutex>& lock);
  void fail(const std::shared_ptr<Job>& job, Refusal why);

  Engine& engine_;
  SchedulerOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::unique_ptr<Running>> running_;  // the scheduler thread's; sizes read under mu_
  size_t reserved_ = 0;      // guarded by mu_
  size_t held_ = 0;          // guarded by mu_ (sampled after each step)
  bool stopping_ = false;
  CancelToken shutdown_;
  SchedulerStats stats_;     // guarded by mu_
  std::deque<std::pair<double, std::pair<int64_t, int64_t>>> rate_;  // (time, (prompt, generated)) samples
  std::thread thread_;
};

}  // namespace tappa::server
