// `tappa serve`: an OpenAI-compatible HTTP server over one engine (cpp-httplib from Debian, JSON by
// nlohmann-json). Endpoints: GET /health, /v1/models, /metrics; POST /v1/completions (echo, logprobs,
// max_tokens 0 for scoring — what lm-eval's `gguf` model sends), /v1/chat/completions (server-sent
// events with "stream": true), /tokenize, /detokenize. Every request becomes Scheduler jobs, stepped
// together in one decode loop (scheduler.h); a bad request is answered 4xx with an OpenAI-style error
// object and never reaches the engine.
//
// The entry point of `tappa serve`, public so that a program can embed the server over its own engine.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "tappa/engine.h"
#include "tappa/model.h"

namespace tappa::server {

// Admission and batching of the one decode loop (src/server/scheduler.h).
struct SchedulerOptions {
  size_t kv_cap_bytes = size_t(2048) << 20;  // the global KV memory cap
  int max_running = 64;         // jobs stepped together at most
  int max_queue = 256;          // jobs waiting at most (beyond: 503 at once)
  double queue_timeout_s = 60;  // a job waiting longer gets 503
  int step_prompt_tokens = 1024;  // prompt tokens per step beside the decodes (at least one chunk)
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (see Server::port())
  std::string model_name;           // the id /v1/models reports (and the only one requests may name)
  std::string api_key;              // when set, every request needs "Authorization: Bearer <key>"
  size_t max_body_bytes = 8 << 20;  // larger bodies get 413
  int http_threads = 128;           // handler threads: each open request holds one while it waits
  int max_logprobs = 20;            // top alternatives per position at most
  SchedulerOptions scheduler;
};

class Server {
 public:
  // Binds host:port (throws tappa::Error naming them when it cannot) and starts the scheduler.
  Server(Engine& engine, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;   // the bound port
  void run();         // serves until stop()
  void stop();        // from any thread: the listener ends, running requests are cancelled

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tappa::server
