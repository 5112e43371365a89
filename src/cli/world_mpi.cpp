// The world of `mpirun -np N tappa …` (see world.h): MPI_COMM_WORLD, strings gathered with their
// lengths first. Built only with -DTAPPA_MPI=ON.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "cli/world.h"

namespace tappa::cli {

World::World() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) MPI_Init(nullptr, nullptr);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  mpi_ = true;
}

World::~World() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (mpi_ && !finalized) MPI_Finalize();
}

World& World::get() {
  static World w;
  return w;
}

std::vector<std::string> World::gather(const std::string& mine) {
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
  long long n = static_cast<long long>(value.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  value.resize(static_cast<size_t>(n));
  MPI_Bcast(value.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
}

void World::barrier() { MPI_Barrier(MPI_COMM_WORLD); }

void World::fail(const std::string& message) {
  std::fprintf(stderr, "tappa: error: rank %d of %d: %s\n", rank_, size_, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}

}  // namespace tappa::cli
