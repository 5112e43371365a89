// Run-time choice of the CPU kernel variant (issue #22; the namespaces are explained in isa.h).
//
// One binary carries the kernels of backend/cpu three times: scalar (baseline x86-64, also the only
// variant on other architectures), avx2 (AVX2 + FMA + F16C) and avx512 (AVX-512 F/BW/VL/DQ + VNNI).
// At the first kernel call the best one the CPU supports is picked (__builtin_cpu_supports, which
// also checks that the OS saves the vector state) — unless TAPPA_CPU_VARIANT=scalar|avx2|avx512 pins
// one, for tests and for measuring a smaller machine's code path on a bigger one; a name that is
// unknown, not built, or needs instructions this CPU lacks is an error (tappa::Error), never a
// silent fallback. Each variant fills a KernelTable with its entry points; the dispatchers that the
// rest of the library calls (cpu::matmul, cpu::attention_rows, backend::make_cpu_backend, ...:
// dispatch.cpp) forward through the chosen table.
#pragma once
#include <string>

#include "backend/cpu/attention.h"
#include "backend/cpu/attention_kv_quant.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/ops_gemma.h"
#include "backend/cpu/quantize_act.h"

namespace tappa::cpu {

// The entry points of one variant. Its types are spelt with decltype of the declarations, which read
// the same in a variant's translation unit and in the dispatcher's.
struct KernelTable {
  const char* name;
  decltype(&::tappa::backend::make_cpu_backend) make_cpu_backend;
  decltype(&::tappa::cpu::matmul) matmul;
  decltype(&::tappa::cpu::attention_row) attention_row;
  decltype(&::tappa::cpu::attention_rows) attention_rows;
  decltype(&::tappa::cpu::attention_rows_kv) attention_rows_kv;
  decltype(&::tappa::cpu::attention_chunk_kv) attention_chunk_kv;
  decltype(&::tappa::cpu::attention_merge_kv) attention_merge_kv;
  decltype(&::tappa::cpu::rms_norm_row) rms_norm_row;
  decltype(&::tappa::cpu::rope_angles) rope_angles;
  decltype(&::tappa::cpu::rope_apply) rope_apply;
  decltype(&::tappa::cpu::silu_mul) silu_mul;
  decltype(&::tappa::cpu::softmax) softmax;
  decltype(&::tappa::cpu::geglu_tanh) geglu_tanh;
  decltype(&::tappa::cpu::gelu_tanh_exact) gelu_tanh_exact;
  decltype(&::tappa::cpu::scale_inplace) scale_inplace;
  decltype(&::tappa::cpu::softcap_inplace) softcap_inplace;
  decltype(&::tappa::cpu::detail::quantize_activation) quantize_activation;
  decltype(&::tappa::cpu::detail::quantize_activation_k256_group) quantize_activation_k256_group;
};

// The variant in use ("scalar", "avx2", "avx512"); picks it on the first call. Throws tappa::Error when
// TAPPA_CPU_VARIANT names a variant that is unknown, not built in, or not supported by this CPU.
const char* cpu_variant();

// The variants this binary carries and this CPU can run, best last, e.g. "scalar avx2 avx512".
std::string cpu_variants_supported();

}  // namespace tappa::cpu
