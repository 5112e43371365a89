// Errors that a user can act on. Every failure that comes from input (a file, a flag, a text, a
// request) is reported as tappa::Error with a one-line message naming the file and the problem, and a
// code a caller can branch on (a server maps them to HTTP statuses, the Python module to exception
// classes). The CLI prints "tappa: error: <message>" and exits non-zero. Internal invariants use assert.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

namespace tappa {

enum class ErrorCode {
  bad_input,         // a flag, a request field, a token id, a text the call cannot take
  bad_file,          // a file that cannot be read or is not what it claims (GGUF, data, checkpoint)
  context_overflow,  // more tokens than the sequence's context holds
  out_of_memory,     // a memory cap or the allocator refused
  cancelled,         // a CancelToken stopped the work
  internal,          // a bug: an invariant did not hold
};

std::string_view error_code_name(ErrorCode code);  // "bad_input", "bad_file", …

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorCode code = ErrorCode::bad_input)
      : std::runtime_error(message), code_(code) {}
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace tappa
