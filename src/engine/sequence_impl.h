// A sequence's state, shared by the engine (engine.cpp), the forward pass (forward.cpp) and the
// state (de)serialisation (sequence.cpp). Internal to the library.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "tappa/engine.h"

namespace tappa {

struct Sequence::Impl {
  const Engine* engine = nullptr;
  std::unique_ptr<KvCache> cache;
  int n_ctx = 0;
  int64_t n_past = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logits;
  int32_t greedy = -1;  // argmax of the last greedy step
  KvPolicy* policy = nullptr;
  Observer* observer = nullptr;

  // Hook buffers (host memory, grown on first use, reused): the last query rows of a prefill for a
  // policy (post- and pre-RoPE), and one decode step's attention of every query head.
  std::vector<float> q_tail, q_pre_tail;
  std::vector<float> decode_probs;          // [n_head][stride]
  std::vector<const float*> decode_prob_ptrs;
};

}  // namespace tappa
