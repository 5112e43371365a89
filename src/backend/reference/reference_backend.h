// The reference backend: plain scalar loops (reference_backend.cpp), the yardstick of the parity test.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace tappa::backend {

std::unique_ptr<Backend> make_reference_backend();

}  // namespace tappa::backend
