// Decode attention over long f16 / q8_0 / q4_0 lists split across threads (flash-decoding): a single
// token's row over a list of n keys is cut into fixed chunks of kKvSplitChunk keys (attention_kv_quant.h),
// the chunks run on any thread, and a second pass merges each row's chunks. Decoding one sequence
// otherwise has one task per KV head and layer — 3 for SmolLM2 — which two threads share 2 : 1.
// Which rows split, and where, depends only on the row (kv_row_splits), so results do not depend on
// the thread count or on the batch. CpuBackend::attention hands these rows here and does the others.
#pragma once
#include "backend/cpu/isa.h"
#include <span>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"

namespace tappa {
class FormatKvCache;
}

namespace tappa::cpu {
TAPPA_ISA_BEGIN

class KvSplitAttention {
 public:
  // The rows of `call` that split (their caches: formatted[seq], null for fp32 ones). False: none.
  bool plan(const backend::AttentionCall& call, std::span<const FormatKvCache* const> formatted);
  // Computes them: outputs into `out`, probabilities to call.taps.
  void run(ThreadPool& pool, const backend::AttentionCall& call, const backend::Mat& q, backend::Mat out);

 private:
  struct Row {
    int seq = 0, kvh = 0, first = 0, n_vis = 0, chunks = 0;
    size_t probs = 0;  // offset of its [group][n_vis] probabilities in probs_
    size_t part = 0;   // index of its first (chunk, head) partial
  };
  std::vector<Row> rows_;
  std::vector<std::pair<int, int>> items_;  // (row, chunk)
  std::vector<float> probs_, acc_, m_;
  std::vector<double> sum_;
  std::vector<int> bounds_;                 // per row: chunks + 1 key boundaries (at part / group + row)
  std::vector<float*> acc_ptrs_;            // per (chunk, head) partial: its accumulator in acc_
  std::vector<const FormatKvCache*> formatted_;
};

TAPPA_ISA_END
}  // namespace tappa::cpu
