// A weight matrix as stored in the GGUF file: `rows` rows (output features) of `cols` elements (input
// features), row-major, in `type`, inside the read-only mapping. Every backend reads weights through
// these views; a backend that keeps its own copy (a GPU) makes it from them once.
#pragma once
#include <cstdint>

#include "tappa/tensor_type.h"

namespace tappa {

struct WeightView {
  TensorType type = TensorType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features (row length)
  // Random-weight models whose matrices live only on a GPU (Model::random with host_weights off):
  // data is nullptr, type BF16, and element i of the row-major matrix is
  // random_weight(random_seed, i, random_step) (model/random_weights.h), made in device memory by the
  // backend. 0 for every matrix with data.
  uint64_t random_seed = 0;
  float random_step = 0.0f;
};

}  // namespace tappa
