// Which instruction-set variant of the CPU kernels a translation unit belongs to (issue #22).
//
// The kernel sources of backend/cpu (every .cpp here except thread_pool.cpp and dispatch.cpp) are
// compiled once per variant — scalar (baseline x86-64), avx2 (+FMA, F16C), avx512 (F/BW/VL/DQ/VNNI)
// — with -DTAPPA_ISA_NS=<variant> and that variant's -m flags (CMakeLists.txt). Their functions, and
// the inline helpers of the headers they include (simd.h, vec.h, exp_approx.h), are declared inside
// TAPPA_ISA_BEGIN ... TAPPA_ISA_END: an inline namespace named after the variant, so the same source
// text yields tappa::cpu::avx2::matmul, tappa::cpu::avx512::matmul, ... — distinct symbols, no
// kernel written twice, and no inline helper compiled for one ISA can stand in for another's at link
// time. Everything else in the library sees the same headers without TAPPA_ISA_NS: there the names
// are the dispatchers of dispatch.cpp, which forward to the variant picked at start (dispatch.h).
// Types (AttentionRow, ActRow, Scratch, ...) stay outside the variant namespace: all variants and
// their callers share them.
#pragma once

#if defined(TAPPA_ISA_NS)
#define TAPPA_ISA_BEGIN inline namespace TAPPA_ISA_NS {
#define TAPPA_ISA_END }
#define TAPPA_ISA_STR2(x) #x
#define TAPPA_ISA_STR(x) TAPPA_ISA_STR2(x)
#define TAPPA_ISA_NAME TAPPA_ISA_STR(TAPPA_ISA_NS)
#else
#define TAPPA_ISA_BEGIN
#define TAPPA_ISA_END
#endif
