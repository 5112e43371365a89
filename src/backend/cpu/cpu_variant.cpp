// The kernel table of one variant (dispatch.h): compiled once per variant like the kernels, so each
// name below resolves to that variant's function (isa.h).
#include "backend/cpu/dispatch.h"

namespace tappa::cpu {
TAPPA_ISA_BEGIN

extern const KernelTable kKernelTable;
const KernelTable kKernelTable = {
    TAPPA_ISA_NAME,          &backend::make_cpu_backend, &matmul,
    &attention_row,          &attention_rows,           &attention_rows_kv,
    &attention_chunk_kv,     &attention_merge_kv,       &rms_norm_row,
    &rope_angles,            &rope_apply,               &silu_mul,
    &softmax,                &geglu_tanh,               &gelu_tanh_exact,
    &scale_inplace,          &softcap_inplace,          &detail::quantize_activation,
    &detail::quantize_activation_k256_group,
};

TAPPA_ISA_END
}  // namespace tappa::cpu
