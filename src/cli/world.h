// The processes a command runs on: one (the plain binary), or the ranks of `mpirun -np N tappa …` in
// a build with -DTAPPA_MPI=ON (world_mpi.cpp; world_single.cpp otherwise, so the plain binary has no
// MPI in it at all). Work items are sharded by index (item i on rank i mod N: deterministic, the same
// split on every relaunch); per-item results travel to rank 0 as strings and rank 0 writes exactly
// the files one process writes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tappa::cli {

class World {
 public:
  // The world of this process (MPI is initialised on first use when launched under mpirun).
  static World& get();
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }
  bool owns(int64_t item) const { return size_ == 1 || item % size_ == rank_; }
  // Every rank's string, in rank order, on rank 0 (other ranks get an empty vector). Collective.
  std::vector<std::string> gather(const std::string& mine);
  // Rank 0's value on every rank. Collective.
  void broadcast(std::string& value);
  void barrier();
  // One line naming this rank on stderr, then every rank stops (exit code 1).
  [[noreturn]] void fail(const std::string& message);
  ~World();

 private:
  World();
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
};

}  // namespace tappa::cli
