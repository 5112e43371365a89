// tappa serve — an OpenAI-compatible HTTP server (include/tappa/server.h) over one engine: every request
// stepped together in one decode loop, each with its own KV method and budget.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/common.h"
#include "tappa/engine.h"
#include "tappa/error.h"
#include "tappa/model.h"
#include "tappa/server.h"

namespace tappa::cli {

namespace {
server::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->stop();
}
}  // namespace

void register_serve(CLI::App& app, int& rc) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models)");
  cmd->footer(
      "Examples:\n"
      "  tappa serve --port 8080\n"
      "  curl -s localhost:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":32}'\n"
      "  lm_eval --model gguf --model_args base_url=http://127.0.0.1:8080 --tasks piqa --limit 100\n"
      "Per request: \"kv_method\" (a KV spec, e.g. \"tappa\"), \"kv_budget\" or \"kv_ratio\". See docs/SERVER.md.");
  struct Opts {
    std::string model, host = "127.0.0.1", api_key, name;
    int port = 8080, threads = 0, ctx = 4096, batch = 512, max_running = 64, max_queue = 256, http_threads = 128;
    double kv_cap_mib = 2048, queue_timeout = 60, max_body_mib = 8;
  };
  auto o = std::make_shared<Opts>();
  add_model_option(*cmd, o->model);
  cmd->add_option("--host", o->host, "Address to listen on (loopback by default)")->capture_default_str();
  cmd->add_option("--port", o->port, "Port (0: any free one, printed at start)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("-c,--ctx-size", o->ctx, "Context of each request in tokens (0: the model's)")->capture_default_str()->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-b,--batch-size", o->batch, "Prompt tokens per forward chunk")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on every request");
  cmd->add_option("--model-name", o->name, "Model id for /v1/models (default: the file name without .gguf)");
  cmd->add_option("--kv-cap-mib", o->kv_cap_mib, "KV memory all running requests may hold together (MiB)")
      ->capture_default_str()->check(finite_range(1, 1 << 24));
  cmd->add_option("--max-running", o->max_running, "Requests stepped together at most")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--max-queue", o->max_queue, "Requests waiting at most (beyond: 503)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--queue-timeout", o->queue_timeout, "Seconds a request may wait for admission (then 503)")
      ->capture_default_str()->check(finite_range(0.1, 86400));
  cmd->add_option("--max-body-mib", o->max_body_mib, "Largest request body (MiB; larger: 413)")->capture_default_str()->check(finite_range(0.001, 1024));
  cmd->add_option("--http-threads", o->http_threads, "HTTP handler threads (each open request holds one)")
      ->capture_default_str()->check(CLI::Range(2, 4096));
  cmd->callback([o, &rc] {
    const auto model = Model::load(o->model);
    EngineOptions eo;
    eo.n_threads = o->threads;
    eo.n_ctx = o->ctx;
    eo.n_batch = o->batch;
    Engine engine(model, eo);
    server::ServerOptions so;
    so.host = o->host;
    so.port = o->port;
    so.api_key = o->api_key;
    so.model_name = o->name.empty() ? std::filesystem::path(o->model).stem().string() : o->name;
    so.max_body_bytes = static_cast<size_t>(o->max_body_mib * 1048576.0);
    so.http_threads = o->http_threads;
    so.scheduler.kv_cap_bytes = static_cast<size_t>(o->kv_cap_mib * 1048576.0);
    so.scheduler.max_running = o->max_running;
    so.scheduler.max_queue = o->max_queue;
    so.scheduler.queue_timeout_s = o->queue_timeout;
    so.scheduler.step_prompt_tokens = o->batch;
    server::Server srv(engine, so);
    g_server = &srv;
    std::signal(SIGPIPE, SIG_IGN);  // a client that left is a failed write, not the end of the server
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::fprintf(stderr, "tappa serve: model %s, context %d, listening on http://%s:%d\n", so.model_name.c_str(), engine.n_ctx(),
                 so.host.c_str(), srv.port());
    std::fflush(stderr);
    srv.run();
    srv.stop();
    g_server = nullptr;
    rc = 0;
  });
}

}  // namespace tappa::cli
