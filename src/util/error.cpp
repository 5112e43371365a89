#include "tappa/error.h"

namespace tappa {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::bad_input: return "bad_input";
    case ErrorCode::bad_file: return "bad_file";
    case ErrorCode::context_overflow: return "context_overflow";
    case ErrorCode::out_of_memory: return "out_of_memory";
    case ErrorCode::cancelled: return "cancelled";
    case ErrorCode::internal: return "internal";
  }
  return "internal";
}

}  // namespace tappa
