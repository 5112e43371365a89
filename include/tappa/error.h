// Errors that a user can act on. Every failure that comes from input (a file, a flag, a text) is
// reported as tappa::Error with a one-line message naming the file and the problem; the CLI prints it
// as "tappa: error: <message>" and exits non-zero. Internal invariants use assert.
#pragma once
#include <stdexcept>
#include <string>

namespace tappa {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tappa
