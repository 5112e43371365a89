// The golden files written by scripts/gen_golden.sh from llama.cpp (tests/data/golden for the default
// model, tests/data/gemma3/golden for Gemma 3): a prompt's tokens, llama.cpp's argmax and top logits at
// every position, and its greedy continuation with the top-1/top-2 margin at each step.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tappa::test {

struct Golden {
  std::string name;
  std::vector<int32_t> tokens;
  std::vector<int32_t> argmax;
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  int prefix_len = 0;
  std::vector<int32_t> greedy;
  std::vector<double> greedy_margin;  // llama.cpp's top-1 minus top-2 logit at each greedy step
};

inline Golden load_golden(const std::filesystem::path& p) {
  std::ifstream in(p);
  const auto j = nlohmann::json::parse(in);
  Golden g;
  g.name = p.stem().string();
  g.tokens = j.at("tokens").get<std::vector<int32_t>>();
  for (const auto& pos : j.at("positions")) {
    g.argmax.push_back(pos.at("argmax").get<int32_t>());
    std::vector<std::pair<int32_t, float>> top;
    for (const auto& t : pos.at("top")) top.emplace_back(t.at(0).get<int32_t>(), t.at(1).get<float>());
    g.top.push_back(std::move(top));
  }
  g.prefix_len = j.at("greedy").at("prefix_len").get<int>();
  g.greedy = j.at("greedy").at("tokens").get<std::vector<int32_t>>();
  g.greedy_margin = j.at("greedy").at("margin").get<std::vector<double>>();
  return g;
}

}  // namespace tappa::test
