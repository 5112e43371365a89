// The work items of one command (perplexity chunks, multiple-choice items, ...) run over the ranks of
// `mpirun -np N tappa …` (world.h): item i belongs to rank i mod N, each rank checkpoints the results
// it computed into its own file (CKPT.rank<r>, atomic writes), and gather() brings every result to
// rank 0 in item order, where the command's one-process summary code runs unchanged. Results travel as
// JSON, whose doubles round-trip exactly (17 significant digits), so rank 0 sees the very bits each
// rank computed: per-item scores, and sums formed from them in item order, are bitwise those of one
// process.
//
// Resume reads every rank file of CKPT, whatever N wrote it, so a relaunch may use another rank count;
// commands also feed their one-process checkpoint in through add().
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/world.h"

namespace tappa::cli {

// The rank files CKPT.rank<r> on disk (any r, sorted by name; not an atomic write's temporaries).
std::vector<std::string> rank_files_of(const std::string& ckpt);

class ShardedItems {
 public:
  // ckpt may be empty (no checkpoints, no resume); settings must match on resume (which: the options
  // they come from, for the error line).
  ShardedItems(World& world, int64_t n_items, std::string ckpt, nlohmann::json settings, std::string which);

  // Loads the rank files of an earlier run of the same settings (any rank count).
  void resume();
  // A result known from elsewhere (a one-process checkpoint).
  void add(int64_t item, nlohmann::json value);

  bool mine(int64_t item) const { return world_.owns(item); }
  bool done(int64_t item) const { return results_.count(item) != 0; }
  // Items of this rank, and how many of them are done.
  int64_t n_mine() const;
  int64_t n_mine_done() const;

  // This rank's result of an item it owns; the rank file is rewritten every `every` results and at flush().
  void record(int64_t item, nlohmann::json value, int every = 1);
  void flush();

  // Collective: on rank 0, every item's result in item order (null where no rank has one, e.g. after a
  // stop); an empty vector on the other ranks.
  std::vector<nlohmann::json> gather();
  // The end of a sharded command's loop, collective: flush(), then gather(). Rank 0 gets every result;
  // the other ranks get nothing and `rc` set to what they exit with (128 + the signal after a stop, else 0).
  std::optional<std::vector<nlohmann::json>> flush_and_gather(int& rc);

  std::string rank_file(int rank) const { return ckpt_ + ".rank" + std::to_string(rank); }
  // The rank files of this checkpoint on disk (any rank count), and their removal (rank 0, once the
  // results are written whole: the files one process writes are then all that is left).
  std::vector<std::string> rank_files() const;
  void remove_rank_files() const;

 private:
  World& world_;
  int64_t n_items_;
  std::string ckpt_, which_;
  nlohmann::json settings_;
  std::map<int64_t, nlohmann::json> results_;  // everything known: own, resumed, added
  int unsaved_ = 0;
};

}  // namespace tappa::cli
