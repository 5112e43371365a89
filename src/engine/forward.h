// The decoder's forward pass over a batch of sequences, as backend op calls (forward.cpp).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "engine/sequence_impl.h"
#include "tappa/control.h"
#include "tappa/engine.h"

namespace tappa {

struct Engine::Forward {
  Forward(const Model& model, backend::Backend& be, int n_batch);
  ~Forward();

  // Runs every step (validated by the caller) through the model; appends to each sequence's cache,
  // fills its logits, advances nothing else (the caller commits tokens and positions).
  void run(std::span<const Step> steps, const std::vector<char>& skip, const float* rope_inv_freq,
           const RunControl& control);

  struct Workspace;
  struct Plan;

 private:
  const Model& model_;
  backend::Backend& be_;
  int n_batch_;
  std::unique_ptr<Workspace> ws_;
  std::unique_ptr<Plan> plan_;
};

}  // namespace tappa
