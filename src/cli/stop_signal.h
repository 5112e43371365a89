// Graceful interruption of long jobs (eval-kv, eval-mc, ppl, calibrate, analyze). While a
// StopSignalScope lives, the first SIGINT or SIGTERM only sets a flag: the job polls
// stop_requested() between items, writes what it has (atomically) and exits with a clear message.
// A second signal restores the default action, so a stuck job can still be killed with ^C ^C.
// The flag is the CLI's: library calls see it as the CancelToken stop_token() (include/tappa/control.h).
#pragma once
#include "tappa/control.h"

namespace tappa {

class StopSignalScope {
 public:
  StopSignalScope();   // installs the handlers, clears the flag
  ~StopSignalScope();  // restores the previous handlers
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;
};

bool stop_requested();
// Cancelled by the first SIGINT/SIGTERM while a StopSignalScope lives; pass it in a RunControl.
const CancelToken& stop_token();
// The signal that asked to stop (SIGINT/SIGTERM), 0 when none. Exit codes follow the shell's
// 128 + signal convention so scripts can tell an interrupted run from a failed one.
int stop_signal_number();

}  // namespace tappa
