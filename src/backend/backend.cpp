// The backends this build carries, by name.
#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "backend/reference/reference_backend.h"
#include "tappa/error.h"

namespace tappa::backend {

std::vector<std::string> backend_names() { return {"cpu", "reference"}; }

std::unique_ptr<Backend> make_backend(const std::string& name, int n_threads) {
  if (name.empty() || name == "cpu") return make_cpu_backend(n_threads);
  if (name == "reference") return make_reference_backend();
  std::string names;
  for (const std::string& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error("unknown backend '" + name + "' (this build has: " + names + ")");
}

}  // namespace tappa::backend
