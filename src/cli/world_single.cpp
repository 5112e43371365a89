// The world of the plain binary: one process (see world.h).
#include <cstdio>
#include <cstdlib>

#include "cli/world.h"

namespace tappa::cli {

World::World() = default;
World::~World() = default;
World& World::get() {
  static World w;
  return w;
}
std::vector<std::string> World::gather(const std::string& mine) { return {mine}; }
void World::broadcast(std::string&) {}
void World::barrier() {}
void World::fail(const std::string& message) {
  std::fprintf(stderr, "tappa: error: %s\n", message.c_str());
  std::exit(1);
}

}  // namespace tappa::cli
