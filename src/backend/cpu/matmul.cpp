// Matrix products with quantized or float weights: work split, activation quantization and kernel
// selection. The kernels live in vec_dot_*.cpp (row dot products: decode and fallback),
// gemm_vnni.cpp (repacked AVX-512 VNNI GEMM for several tokens) and gemm_float.cpp (fp32 panels for
// float weights); Q4_K and Q6_K go through gemm_kquant.cpp / vec_dot_k.cpp in llama.cpp's float order
// for every token count.
#include "backend/cpu/matmul.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "backend/cpu/gemm_kquant.h"
#include "backend/cpu/gemm_float.h"
#include "backend/cpu/gemm_vnni.h"
#include "backend/cpu/quantize_act.h"
#include "backend/cpu/vec_dot.h"
#include "quant/quant.h"
#include "tappa/error.h"

namespace tappa::cpu {
TAPPA_ISA_BEGIN

using namespace detail;

namespace {

// From this many tokens on, the repacked GEMM beats row dot products (the repack of a 16-row panel
// costs about as much as one token's dot products over it).
constexpr int64_t kGemmMinTokens = 4;
// Batched decoding streams every weight from memory once a step: below this many sequences the row
// kernels, which prefetch their four rows, beat the repack's sixteen streams (SmolLM2, 2 threads,
// tg32: 4 sequences ~700-880 tok/s through the rows against ~650-780 through the GEMM, 8 sequences
// ~890-900 against ~770-810; 16 sequences ~1050 against ~1200 in the GEMM's favour).
constexpr int64_t kGemmMinTokensPerToken = 16;
// Output rows per work item: keeps SIMD tiles whole and gives each thread contiguous rows.
constexpr int64_t kRowGrain = 16;

constexpr size_t align64(size_t n) { return (n + 63) & ~size_t{63}; }

// Whether a PerToken call of m tokens takes the GEMM (which sums Q4_1 and Q8_0 in the one-token
// order, so batched decoding may). Q4_1 from kGemmMinTokensPerToken tokens on, panels kept or not.
// Q8_0 only with kept panels: repacked on every call it lost to the row kernels (the tied output
// head, 49152 x 576 at 16 tokens: 5.9 against 5.4 ms, one thread); its panels are about its own
// size (576 bytes per 16 rows x 32 columns against 544), so keeping them costs little.
bool per_token_gemm(TensorType t, int64_t m, bool prepacked) {
  if (m < kGemmMinTokensPerToken || !gemm_in_token_order(t)) return false;
  return t == TensorType::Q4_1 || prepacked;
}

// Splits [0, n) into pool.size() contiguous chunks (multiples of grain) and calls f(begin, end, thread)
// for each non-empty one. The closure handed to the pool is one pointer, so std::function stores it
// without allocating.
template <class F>
void split_run(ThreadPool& pool, int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  const int64_t n_grains = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(pool.size(), n_grains));
  if (threads <= 1) {
    f(int64_t{0}, n, 0);
    return;
  }
  struct Ctx {
    const F* f;
    int64_t n, grain, n_grains;
    int threads;
  } ctx{&f, n, grain, n_grains, threads};
  const Ctx* c = &ctx;
  pool.run([c](int t) {
    if (t >= c->threads) return;
    const int64_t g0 = c->n_grains * t / c->threads, g1 = c->n_grains * (t + 1) / c->threads;
    const int64_t b = g0 * c->grain, e = std::min(c->n, g1 * c->grain);
    if (b < e) (*c->f)(b, e, t);
  });
}

bool is_float(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }
bool is_kquant(TensorType t) { return t == TensorType::Q4_K || t == TensorType::Q5_K || t == TensorType::Q6_K; }

using FloatDot = float (*)(const uint8_t*, const float*, int64_t);
using QuantDot = float (*)(const uint8_t*, const ActRow&, int64_t);
using QuantDot4 = void (*)(const uint8_t*, size_t, const ActRow&, int64_t, float*);

FloatDot float_dot(TensorType t) {
  switch (t) {
    case TensorType::F16: return vec_dot_f16;
    case TensorType::BF16: return vec_dot_bf16;
    default: return vec_dot_f32;
  }
}

QuantDot quant_dot(TensorType t) {
  switch (t) {
    case TensorType::Q4_0: return vec_dot_q4_0;
    case TensorType::Q4_1: return vec_dot_q4_1;
    case TensorType::Q8_0: return vec_dot_q8_0;
    case TensorType::Q4_K: return vec_dot_q4_k;
    case TensorType::Q5_K: return vec_dot_q5_k;
    case TensorType::Q6_K: return vec_dot_q6_k;
    default: return nullptr;
  }
}

QuantDot4 quant_dot4(TensorType t) {
  switch (t) {
    case TensorType::Q4_0: return vec_dot4_q4_0;
    case TensorType::Q4_1: return vec_dot4_q4_1;
    case TensorType::Q8_0: return vec_dot4_q8_0;
    default: return nullptr;
  }
}

using QuantDotTokens = void (*)(const uint8_t*, size_t, const ActRow*, int, int64_t, float*, int64_t);

QuantDotTokens quant_dot4_tokens(TensorType t) {
  switch (t) {
    case TensorType::Q4_1: return vec_dot4_tokens_q4_1;
    case TensorType::Q8_0: return vec_dot4_tokens_q8_0;
    default: return nullptr;
  }
}

void matmul_float(const WeightView& w, size_t stride, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
                  ThreadPool& pool, Scratch& scratch, bool token_invariant) {
  if (m == 1 || token_invariant) {
    // The one-token order (row dot products); several tokens pass over each 16-row tile while it is
    // in cache, so the weights are still read once.
    const FloatDot dot = float_dot(w.type);
    split_run(pool, w.rows, kRowGrain, [&](int64_t b, int64_t e, int) {
      for (int64_t r0 = b; r0 < e; r0 += kRowGrain) {
        const int64_t r1 = std::min(e, r0 + kRowGrain);
        for (int64_t t = 0; t < m; ++t)
          for (int64_t r = r0; r < r1; ++r) y[t * ldy + r] = dot(w.data + r * stride, x + t * ldx, w.cols);
      }
    });
    return;
  }
  if (gemm_float_panel_supported()) {
    // 48-row fp32 panels (gemm_float.h), one per thread, each converted once and then run over all
    // m tokens: a tile reads 8 activation rows sequentially and uses each cache line for 16 k steps,
    // so the activations may come from L3. Threads split the rows in 16-row grains (48 would leave
    // 2 threads unbalanced on 192-row matrices); a thread's last panel may be partial.
    const size_t panel_bytes = align64(gemm_float_panel_bytes(w.cols));
    uint8_t* base = scratch.get(panel_bytes * static_cast<size_t>(pool.size()));
    split_run(pool, w.rows, kRowGrain, [&](int64_t b, int64_t e, int th) {
      float* panel = reinterpret_cast<float*>(base + panel_bytes * th);
      for (int64_t r0 = b; r0 < e; r0 += kFloatPanelRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kFloatPanelRows, e - r0));
        gemm_float_repack(w.type, w.data + r0 * stride, stride, nr, w.cols, panel);
        gemm_float_run(panel, nr, w.cols, x, ldx, m, y + r0, ldy);
      }
    });
    return;
  }
  // Fallback: register tiles of 4 rows x 6 tokens of row dot products. Tokens go in chunks whose
  // activations (~256 KiB) stay in L2 while the thread's rows pass over them (each FMA loads one).
  const int64_t chunk = std::max<int64_t>(16, int64_t{64} * 1024 / w.cols);
  constexpr int64_t kTileRows = 4, kTileTokens = 6;
  split_run(pool, w.rows, kRowGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t c0 = 0; c0 < m; c0 += chunk) {
      const int64_t c1 = std::min(m, c0 + chunk);
      for (int64_t r0 = b; r0 < e; r0 += kTileRows) {
        const int nr = static_cast<int>(std::min(kTileRows, e - r0));
        for (int64_t t0 = c0; t0 < c1; t0 += kTileTokens) {
          const int nt = static_cast<int>(std::min(kTileTokens, c1 - t0));
          gemm_float_tile(w.type, w.data + r0 * stride, stride, nr, x + t0 * ldx, ldx, nt, w.cols, y + t0 * ldy + r0, ldy);
        }
      }
    }
  });
}

void matmul_gemm(const WeightView& w, size_t stride, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
                 ThreadPool& pool, Scratch& scratch, const uint8_t* prepacked) {
  const int group = gemm_group_size(m);
  const size_t act_bytes = align64(gemm_act_bytes(m, w.cols, group));
  const size_t rec_bytes = align64(ActBuffer::record_bytes(w.cols));
  const size_t panel_bytes = align64(gemm_panel_bytes(w.type, w.cols));
  const size_t per_thread = rec_bytes + (prepacked != nullptr ? 0 : panel_bytes);
  uint8_t* base = scratch.get(act_bytes + per_thread * static_cast<size_t>(pool.size()));
  uint8_t* act = base;

  split_run(pool, m, 1, [&](int64_t b, int64_t e, int th) {
    uint8_t* rec = base + act_bytes + per_thread * th;
    for (int64_t t = b; t < e; ++t) gemm_quantize_token(w.type, x + t * ldx, w.cols, t, group, act, rec);
  });

  split_run(pool, w.rows, kPanelRows, [&](int64_t b, int64_t e, int th) {
    uint8_t* panel = base + act_bytes + per_thread * th + rec_bytes;
    for (int64_t r0 = b; r0 < e; r0 += kPanelRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kPanelRows, e - r0));
      if (prepacked != nullptr) {
        gemm_run_panel(w.type, prepacked + static_cast<size_t>(r0 / kPanelRows) * panel_bytes, nr, w.cols, act, m,
                       group, y + r0, ldy);
        continue;
      }
      gemm_repack_panel(w.type, w.data + r0 * stride, stride, nr, w.cols, panel);
      gemm_run_panel(w.type, panel, nr, w.cols, act, m, group, y + r0, ldy);
    }
  });
}

void matmul_rows(const WeightView& w, size_t stride, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
                 ThreadPool& pool, Scratch& scratch) {
  const ActKind kind = is_kquant(w.type) ? ActKind::K256 : ActKind::B32;
  const size_t rec_bytes = ActBuffer::record_bytes(w.cols);
  const ActBuffer acts(scratch.get(rec_bytes * static_cast<size_t>(m)), w.cols);
  if (m == 1) {
    quantize_activation(kind, x, w.cols, acts.record(0));
  } else {
    split_run(pool, m, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) quantize_activation(kind, x + t * ldx, w.cols, acts.record(t));
    });
  }
  const QuantDot dot = quant_dot(w.type);
  const QuantDot4 dot4 = quant_dot4(w.type);
  // Rows [r0, r1) for one token: four at a time where the type has a four-row kernel.
  const auto rows_for_token = [&](int64_t r0, int64_t r1, const ActRow& a, float* yt) {
    int64_t r = r0;
    if (dot4 != nullptr) {
      for (; r + 4 <= r1; r += 4) dot4(w.data + r * stride, stride, a, w.cols, yt + r);
    }
    for (; r < r1; ++r) yt[r] = dot(w.data + r * stride, a, w.cols);
  };
  if (m == 1) {
    const ActRow a = acts.row(0);
    split_run(pool, w.rows, kRowGrain, [&](int64_t b, int64_t e, int) { rows_for_token(b, e, a, y); });
    return;
  }
  // Several tokens (no GEMM kernel, or the per-token order): 16-row tiles stay in cache while every
  // token passes over them; where a multi-token kernel exists, each group of four rows is unpacked
  // once for all tokens (same per-token results as rows_for_token, see vec_dot_tokens.cpp).
  const QuantDotTokens dot4t = quant_dot4_tokens(w.type);
  constexpr int64_t kTokenChunk = 16;
  split_run(pool, w.rows, kRowGrain, [&](int64_t b, int64_t e, int) {
    ActRow a[kTokenChunk];
    for (int64_t r0 = b; r0 < e; r0 += kRowGrain) {
      const int64_t r1 = std::min(e, r0 + kRowGrain);
      if (dot4t == nullptr) {
        for (int64_t t = 0; t < m; ++t) rows_for_token(r0, r1, acts.row(t), y + t * ldy);
        continue;
      }
      for (int64_t t0 = 0; t0 < m; t0 += kTokenChunk) {
        const int nt = static_cast<int>(std::min(kTokenChunk, m - t0));
        for (int i = 0; i < nt; ++i) a[i] = acts.row(t0 + i);
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) dot4t(w.data + r * stride, stride, a, nt, w.cols, y + t0 * ldy + r, ldy);
        for (; r < r1; ++r)
          for (int i = 0; i < nt; ++i) y[(t0 + i) * ldy + r] = dot(w.data + r * stride, a[i], w.cols);
      }
    }
  });
}

// Q4_K and Q6_K in llama.cpp's x86 order (gemm_kquant.h): Q4_K takes the first m - m % 4 tokens in
// its 4-token GEMM order (16-row panels) and the rest in its one-token order; Q6_K takes calls of 8
// or more tokens in its tiled order (16-row panels), fewer through its row dot product, one row
// against up to 4 tokens at a time.
void matmul_kquant(const WeightView& w, size_t stride, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
                   ThreadPool& pool, Scratch& scratch, bool token_invariant) {
  const bool q4 = w.type == TensorType::Q4_K;
  // Token-invariant: every token in the one-token (gemv) order, whatever m is.
  const int64_t m4 = q4 && !token_invariant ? m - m % 4 : 0;
  const size_t rec_bytes = ActBuffer::record_bytes(w.cols);
  const size_t act_bytes = align64(rec_bytes * static_cast<size_t>(m));
  const bool q6_tiled = !q4 && !token_invariant && m >= kQ6TiledMinTokens;
  const size_t panel_bytes = m4 > 0 ? align64(q4k_panel_bytes(w.cols)) : q6_tiled ? align64(q6k_panel_bytes(w.cols)) : 0;
  uint8_t* base = scratch.get(act_bytes + panel_bytes * static_cast<size_t>(pool.size()));
  const ActBuffer acts(base, w.cols);
  const auto quantize = [&](int64_t t) {
    if (t < m4) {
      quantize_activation_k256_group(x + t * ldx, w.cols, acts.record(t));
    } else {
      quantize_activation(ActKind::K256, x + t * ldx, w.cols, acts.record(t));
    }
  };
  if (m == 1) {
    quantize(0);
  } else {
    split_run(pool, m, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) quantize(t);
    });
  }
  if (q4) {
    split_run(pool, w.rows, kKqPanelRows, [&](int64_t b, int64_t e, int th) {
      uint8_t* panel = base + act_bytes + panel_bytes * static_cast<size_t>(th);
      for (int64_t r0 = b; r0 < e; r0 += kKqPanelRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kKqPanelRows, e - r0));
        if (m4 > 0) {
          q4k_repack_panel(w.data + r0 * stride, stride, nr, w.cols, panel);
          for (int64_t t0 = 0; t0 < m4; t0 += 4) {
            const ActRow a[4] = {acts.row(t0), acts.row(t0 + 1), acts.row(t0 + 2), acts.row(t0 + 3)};
            q4k_panel_group4(panel, nr, w.cols, a, y + t0 * ldy + r0, ldy);
          }
        }
        for (int64_t t = m4; t < m; ++t) {
          const ActRow a = acts.row(t);
          for (int64_t r = r0; r < r0 + nr; ++r) y[t * ldy + r] = vec_dot_q4_k(w.data + r * stride, a, w.cols);
        }
      }
    });
    return;
  }
  if (q6_tiled) {
    split_run(pool, w.rows, kKqPanelRows, [&](int64_t b, int64_t e, int th) {
      uint8_t* panel = base + act_bytes + panel_bytes * static_cast<size_t>(th);
      for (int64_t r0 = b; r0 < e; r0 += kKqPanelRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kKqPanelRows, e - r0));
        q6k_repack_panel(w.data + r0 * stride, stride, nr, w.cols, panel);
        for (int64_t t0 = 0; t0 < m; t0 += 4) {
          const int nt = static_cast<int>(std::min<int64_t>(4, m - t0));
          ActRow a[4];
          for (int i = 0; i < nt; ++i) a[i] = acts.row(t0 + i);
          q6k_panel_tokens(panel, nr, w.cols, a, nt, y + t0 * ldy + r0, ldy);
        }
      }
    });
    return;
  }
  split_run(pool, w.rows, kRowGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t r0 = b; r0 < e; r0 += kRowGrain) {
      const int64_t r1 = std::min(e, r0 + kRowGrain);
      for (int64_t t0 = 0; t0 < m; t0 += 4) {
        const int nt = static_cast<int>(std::min<int64_t>(4, m - t0));
        ActRow a[4];
        for (int i = 0; i < nt; ++i) a[i] = acts.row(t0 + i);
        for (int64_t r = r0; r < r1; ++r) {
          float out[4];
          q6k_row_tokens(w.data + r * stride, a, nt, w.cols, out);
          for (int i = 0; i < nt; ++i) y[(t0 + i) * ldy + r] = out[i];
        }
      }
    }
  });
}

}  // namespace

void matmul(const WeightView& w, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, ThreadPool& pool,
            Scratch& scratch, MatmulOrder order, const uint8_t* prepacked) {
  if (!matmul_supports(w.type)) {
    throw Error("matmul: unsupported weight type " + std::to_string(static_cast<uint32_t>(w.type)));
  }
  if (m <= 0 || w.rows <= 0) return;
  const size_t stride = quant::row_bytes(w.type, w.cols);  // throws if cols is not a multiple of the block
  const bool invariant = order == MatmulOrder::PerToken;
  if (is_float(w.type)) {
    matmul_float(w, stride, x, m, ldx, y, ldy, pool, scratch, invariant);
  } else if (w.type == TensorType::Q4_K || w.type == TensorType::Q6_K) {
    matmul_kquant(w, stride, x, m, ldx, y, ldy, pool, scratch, invariant);
  } else if (gemm_supported(w.type) && (invariant ? per_token_gemm(w.type, m, prepacked != nullptr) : m >= kGemmMinTokens)) {
    matmul_gemm(w, stride, x, m, ldx, y, ldy, pool, scratch, invariant ? prepacked : nullptr);
  } else {
    matmul_rows(w, stride, x, m, ldx, y, ldy, pool, scratch);
  }
}

int64_t prepack_min_tokens() { return kGemmMinTokensPerToken; }

size_t prepack_bytes(const WeightView& w) {
  if (!gemm_in_token_order(w.type) || w.data == nullptr || w.rows <= 0 || w.cols % 32 != 0) return 0;
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  return static_cast<size_t>(panels) * align64(gemm_panel_bytes(w.type, w.cols));
}

void prepack(const WeightView& w, uint8_t* out, ThreadPool& pool) {
  if (prepack_bytes(w) == 0) return;
  const size_t stride = quant::row_bytes(w.type, w.cols);
  const size_t panel_bytes = align64(gemm_panel_bytes(w.type, w.cols));
  split_run(pool, w.rows, kPanelRows, [&](int64_t b, int64_t e, int) {
    for (int64_t r0 = b; r0 < e; r0 += kPanelRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kPanelRows, e - r0));
      gemm_repack_panel(w.type, w.data + r0 * stride, stride, nr, w.cols,
                        out + static_cast<size_t>(r0 / kPanelRows) * panel_bytes);
    }
  });
}

TAPPA_ISA_END
}  // namespace tappa::cpu
