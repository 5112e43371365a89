// The world of `mpirun -np N tappa …` (see world.h): MPI_COMM_WORLD, strings gathered with their
// lengths first. Built only with -DTAPPA_MPI=ON.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "cli/world.h"

namespace tappa::cli {

namespace {

// Only a process started by mpirun joins MPI: run by hand, this binary is the plain one (no singleton
// MPI_Init, which would start Open MPI's runtime for a one-process job and refuse to run as root).
bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (const char* e = std::getenv(v); e != nullptr && *e != '\0') return true;
  return false;
}

World* g_world = nullptr;

}  // namespace

World::World() {
  if (!launched_by_mpirun()) return;  // rank 0 of 1, every collective a no-op
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) MPI_Init(nullptr, nullptr);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  mpi_ = true;
}

World::~World() {
  if (!mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (mpi_ && !finalized) MPI_Finalize();
}

World& World::get() {
  static World w;
  g_world = &w;
  return w;
}

World* World::active_multi() { return g_world != nullptr && g_world->size() > 1 ? g_world : nullptr; }

std::vector<std::string> World::gather(const std::string& mine) {
  if (!mpi_) return {mine};
  const long long n = static_cast<long long>(mine.size());
  std::vector<long long> sizes(root() ? size_ : 0);
  MPI_Gather(&n, 1, MPI_LONG_LONG, sizes.data(), 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  std::vector<int> counts, displs;
  std::string all;
  if (root()) {
    long long total = 0;
    for (int r = 0; r < size_; ++r) {
      if (sizes[r] > (1ll << 30)) fail("rank " + std::to_string(r) + " sent more than 1 GiB of results at once");
      counts.push_back(static_cast<int>(sizes[r]));
      displs.push_back(static_cast<int>(total));
      total += sizes[r];
    }
    all.resize(static_cast<size_t>(total));
  }
  MPI_Gatherv(mine.data(), static_cast<int>(n), MPI_CHAR, all.data(), counts.data(), displs.data(), MPI_CHAR, 0,
              MPI_COMM_WORLD);
  std::vector<std::string> out;
  if (root())
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(counts[r])));
  return out;
}

void World::broadcast(std::string& value) {
  if (!mpi_) return;
  long long n = static_cast<long long>(value.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  value.resize(static_cast<size_t>(n));
  MPI_Bcast(value.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
}

void World::barrier() {
  if (mpi_) MPI_Barrier(MPI_COMM_WORLD);
}

void World::fail(const std::string& message) {
  std::fprintf(stderr, "tappa: error: rank %d of %d: %s\n", rank_, size_, message.c_str());
  std::fflush(stderr);
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}

}  // namespace tappa::cli
