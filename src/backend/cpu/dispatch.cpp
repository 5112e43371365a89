// The dispatchers of the CPU kernels (dispatch.h): compiled once, for the baseline ISA. Each forwards
// to the variant picked on first use; the choice is made once per process (a function-local static,
// so it is thread-safe and costs one predictable branch per call afterwards).
#include "backend/cpu/dispatch.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "tappa/error.h"

namespace tappa::cpu {

// The tables of the variants compiled in (CMakeLists.txt defines TAPPA_CPU_HAVE_* for this file).
namespace scalar {
extern const KernelTable kKernelTable;
}
#if TAPPA_CPU_HAVE_AVX2
namespace avx2 {
extern const KernelTable kKernelTable;
}
#endif
#if TAPPA_CPU_HAVE_AVX512
namespace avx512 {
extern const KernelTable kKernelTable;
}
#endif

namespace {

struct Variant {
  const KernelTable* table;
  bool (*cpu_has)();
};

bool always() { return true; }
#if defined(__x86_64__) || defined(__i386__)
// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c" and
// stops the build (CI's fuzz step). Every AVX2 CPU has it; it is checked because -mf16c is used.
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
// What each variant's -m flags let the compiler use (CMakeLists.txt, TAPPA_CPU_VARIANT_FLAGS_*).
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c(); }
bool has_avx512() {
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}
#endif

// Worst first; the last one the CPU supports is the default.
constexpr Variant kVariants[] = {
    {&scalar::kKernelTable, always},
#if TAPPA_CPU_HAVE_AVX2
    {&avx2::kKernelTable, has_avx2},
#endif
#if TAPPA_CPU_HAVE_AVX512
    {&avx512::kKernelTable, has_avx512},
#endif
};

const KernelTable& choose() {
  const char* pin = std::getenv("TAPPA_CPU_VARIANT");
  if (pin == nullptr || *pin == '\0') {
    const KernelTable* best = nullptr;
    for (const Variant& v : kVariants)
      if (v.cpu_has()) best = v.table;
    return *best;  // scalar always qualifies
  }
  const std::string want = pin;
  for (const Variant& v : kVariants) {
    if (want != v.table->name) continue;
    if (!v.cpu_has())
      throw Error("TAPPA_CPU_VARIANT=" + want + ": this CPU lacks the instructions of that variant (it supports: " +
                  cpu_variants_supported() + ")");
    return *v.table;
  }
  std::string built;
  for (const Variant& v : kVariants) built += std::string(built.empty() ? "" : ", ") + v.table->name;
  throw Error("TAPPA_CPU_VARIANT=" + want + ": unknown CPU kernel variant (this binary has: " + built + ")");
}

const KernelTable& table() {
  static const KernelTable& t = choose();
  return t;
}

}  // namespace

const char* cpu_variant() { return table().name; }

std::string cpu_variants_supported() {
  std::string s;
  for (const Variant& v : kVariants)
    if (v.cpu_has()) s += std::string(s.empty() ? "" : " ") + v.table->name;
  return s;
}

// ---- ISA-independent parts of matmul.h -------------------------------------------------------------

uint8_t* Scratch::get(size_t bytes) {
  if (buf_.size() < bytes + 64) buf_.resize(bytes + 64);
  const auto p = reinterpret_cast<uintptr_t>(buf_.data());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t{63});
}

bool matmul_supports(TensorType t) {
  switch (t) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q8_0:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K: return true;
    default: return false;
  }
}

// ---- dispatchers -------------------------------------------------------------------------------------

void matmul(const WeightView& w, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, ThreadPool& pool,
            Scratch& scratch, MatmulOrder order, const uint8_t* prepacked) {
  table().matmul(w, x, m, ldx, y, ldy, pool, scratch, order, prepacked);
}
void attention_row(const AttentionRow& a, float* probs, float* out) { table().attention_row(a, probs, out); }
void attention_rows(const AttentionRow* rows, int count, float* const* probs, float* const* outs) {
  table().attention_rows(rows, count, probs, outs);
}
void attention_rows_kv(const KvList& list, int first, int n_vis, int head_dim, const float* const* q, const float* scale,
                       int count, float* const* probs, float* const* outs) {
  table().attention_rows_kv(list, first, n_vis, head_dim, q, scale, count, probs, outs);
}
void attention_chunk_kv(const KvList& list, int j0, int j1, int head_dim, const float* const* q, const float* scale,
                        int count, float* const* probs, float* m, double* sum, float* const* acc) {
  table().attention_chunk_kv(list, j0, j1, head_dim, q, scale, count, probs, m, sum, acc);
}
void attention_merge_kv(const KvList& list, int head_dim, int count, int chunks, const int* bounds, const float* m,
                        const double* sum, float* const* acc, float* const* probs, float* const* outs) {
  table().attention_merge_kv(list, head_dim, count, chunks, bounds, m, sum, acc, probs, outs);
}
void rms_norm_row(const float* x, const float* w, float* out, int64_t n, float eps) {
  table().rms_norm_row(x, w, out, n, eps);
}
void rope_angles(const RopeParams& p, int64_t pos, float* cos_sin) { table().rope_angles(p, pos, cos_sin); }
void rope_apply(const RopeParams& p, const float* cos_sin, float* x, int n_heads) {
  table().rope_apply(p, cos_sin, x, n_heads);
}
void silu_mul(const float* gate, const float* up, float* out, int64_t n) { table().silu_mul(gate, up, out, n); }
void softmax(float* x, int64_t n) { table().softmax(x, n); }
void geglu_tanh(const float* gate, const float* up, float* out, int64_t n) { table().geglu_tanh(gate, up, out, n); }
float gelu_tanh_exact(float x) { return table().gelu_tanh_exact(x); }
void scale_inplace(float* x, int64_t n, float s) { table().scale_inplace(x, n, s); }
void softcap_inplace(float* x, int64_t n, float cap) { table().softcap_inplace(x, n, cap); }

namespace detail {
void quantize_activation(ActKind kind, const float* x, int64_t cols, uint8_t* record) {
  table().quantize_activation(kind, x, cols, record);
}
void quantize_activation_k256_group(const float* x, int64_t cols, uint8_t* record) {
  table().quantize_activation_k256_group(x, cols, record);
}
}  // namespace detail

}  // namespace tappa::cpu

namespace tappa::backend {
std::unique_ptr<Backend> make_cpu_backend(int n_threads) { return cpu::table().make_cpu_backend(n_threads); }
}  // namespace tappa::backend
