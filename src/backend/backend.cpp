// The backends this build carries, by name.
#include "backend/backend.h"

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/reference/reference_backend.h"
#include "tappa/error.h"
#ifdef TAPPA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace tappa::backend {

void Backend::argmax_rows(const Mat& logits, int32_t* ids) {
  std::vector<float> row(static_cast<size_t>(logits.cols));
  for (int64_t i = 0; i < logits.rows; ++i) {
    download(logits.row_range(i, 1), row.data());
    ids[i] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
  }
}

void host_kv_append(KvCache& cache, int layer, const Mat& k, const Mat& v) {
  const int d = cache.head_dim();
  // Lists per KV head of k: 1, or the GQA group after repeat_lists (each copy gets the same row).
  const int rep = std::max(1, cache.n_head_kv() / static_cast<int>(k.cols / d));
  for (int h = 0; h < cache.n_head_kv(); ++h) {
    const int64_t col = static_cast<int64_t>(h / rep) * d;
    cache.append(layer, h, k.data + col, v.data + col, static_cast<int>(k.rows), k.ld);
  }
}

std::vector<std::string> backend_names() {
#ifdef TAPPA_HAVE_CUDA
  return {"cpu", "reference", "cuda"};
#else
  return {"cpu", "reference"};
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& name, int n_threads) {
  if (name.empty() || name == "cpu") return make_cpu_backend(n_threads);
  if (name == "reference") return make_reference_backend();
#ifdef TAPPA_HAVE_CUDA
  if (name == "cuda") return make_cuda_backend();
#else
  if (name == "cuda") throw Error("this build has no CUDA backend (configure with -DTAPPA_CUDA=ON where nvcc is installed)");
#endif
  std::string names;
  for (const std::string& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error("unknown backend '" + name + "' (this build has: " + names + ")");
}

}  // namespace tappa::backend
