#include "cli/stop_signal.h"

#include <csignal>

namespace tappa {
namespace {

volatile std::sig_atomic_t g_signal = 0;
CancelToken g_token;  // a lock-free atomic flag: safe to set from the handler
struct sigaction g_old_int, g_old_term;

extern "C" void on_stop_signal(int sig) {
  if (g_signal != 0) {  // second signal: stop waiting for the job to notice
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_signal = sig;
  g_token.cancel();
}

}  // namespace

StopSignalScope::StopSignalScope() {
  g_signal = 0;
  g_token.reset();
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking read returns EINTR instead of hiding the signal
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignalScope::~StopSignalScope() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

bool stop_requested() { return g_signal != 0; }
const CancelToken& stop_token() { return g_token; }
int stop_signal_number() { return static_cast<int>(g_signal); }

}  // namespace tappa
