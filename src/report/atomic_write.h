// The library's reports write through the public atomic_write (include/tappa/files.h); this name
// stays so report code reads as before.
#pragma once
#include "tappa/files.h"

namespace tappa::report {

using ::tappa::atomic_write;

}  // namespace tappa::report
