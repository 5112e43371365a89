#include "cli/sharded.h"

#include <algorithm>
#include <filesystem>

#include "cli/common.h"
#include "cli/stop_signal.h"
#include "tappa/error.h"
#include "tappa/files.h"

namespace tappa::cli {

ShardedItems::ShardedItems(World& world, int64_t n_items, std::string ckpt, nlohmann::json settings, std::string which)
    : world_(world), n_items_(n_items), ckpt_(std::move(ckpt)), which_(std::move(which)), settings_(std::move(settings)) {}

std::vector<std::string> ShardedItems::rank_files() const { return rank_files_of(ckpt_); }

std::vector<std::string> rank_files_of(const std::string& ckpt) {
  std::vector<std::string> out;
  if (ckpt.empty()) return out;
  namespace fs = std::filesystem;
  const fs::path base(ckpt);
  const fs::path dir = base.has_parent_path() ? base.parent_path() : fs::path(".");
  const std::string prefix = base.filename().string() + ".rank";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || name.find_first_not_of("0123456789", prefix.size()) != std::string::npos ||
        name.size() == prefix.size())
      continue;  // not a rank file of this checkpoint (e.g. an atomic write's temporary)
    out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void ShardedItems::remove_rank_files() const {
  std::error_code ec;
  for (const std::string& f : rank_files()) std::filesystem::remove(f, ec);
}

void ShardedItems::resume() {
  for (const std::string& path : rank_files()) {
    const nlohmann::json c = read_checkpoint(path, settings_, which_);
    try {
      for (const auto& x : c.at("items")) {
        const int64_t i = x.at(0).get<int64_t>();
        if (i < 0 || i >= n_items_) throw Error(path + ": item " + std::to_string(i) + " out of range");
        results_[i] = x.at(1);
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": not a valid checkpoint (" + e.what() + ")");
    }
  }
}

void ShardedItems::add(int64_t item, nlohmann::json value) { results_[item] = std::move(value); }

int64_t ShardedItems::n_mine() const {
  int64_t n = 0;
  for (int64_t i = 0; i < n_items_; ++i) n += mine(i) ? 1 : 0;
  return n;
}

int64_t ShardedItems::n_mine_done() const {
  int64_t n = 0;
  for (const auto& [i, v] : results_) n += mine(i) ? 1 : 0;
  return n;
}

void ShardedItems::record(int64_t item, nlohmann::json value, int every) {
  results_[item] = std::move(value);
  if (++unsaved_ >= every) flush();
}

void ShardedItems::flush() {
  unsaved_ = 0;
  if (ckpt_.empty()) return;
  // This rank's file holds the items this rank owns under the current split (resumed ones included),
  // so a relaunch with the same N finds each result in exactly one file.
  nlohmann::json items = nlohmann::json::array();
  for (const auto& [i, v] : results_)
    if (mine(i)) items.push_back({i, v});
  atomic_write(rank_file(world_.rank()), nlohmann::json{{"settings", settings_}, {"items", items}}.dump());
}

std::vector<nlohmann::json> ShardedItems::gather() {
  nlohmann::json items = nlohmann::json::array();
  for (const auto& [i, v] : results_)
    if (mine(i)) items.push_back({i, v});
  const std::vector<std::string> all = world_.gather(items.dump());
  if (!world_.root()) return {};
  std::vector<nlohmann::json> out(static_cast<size_t>(n_items_));
  for (const std::string& s : all)
    for (const auto& x : nlohmann::json::parse(s)) out[x.at(0).get<size_t>()] = x.at(1);
  return out;
}

std::optional<std::vector<nlohmann::json>> ShardedItems::flush_and_gather(int& rc) {
  flush();
  std::vector<nlohmann::json> all = gather();
  if (!world_.root()) {
    rc = stop_requested() ? 128 + stop_signal_number() : 0;
    return std::nullopt;
  }
  return all;
}

}  // namespace tappa::cli
