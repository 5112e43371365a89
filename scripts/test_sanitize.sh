#!/usr/bin/env bash
# The whole unit-test suite under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer, part
# of ASan): builds the CMake preset "asan" (-O2 with assertions on, -fno-sanitize-recover=all) into
# build-asan/ and runs every test there, none left out. Any sanitizer report aborts the process it
# happens in — a test binary or a `tappa` run by a CLI test — so the test fails and ctest prints the report.
#
#   scripts/test_sanitize.sh            # what CI runs
#   scripts/test_sanitize.sh -R Gguf    # extra arguments go to ctest (here: only the GGUF tests)
#
# Time (docs/RELIABILITY.md): -O2 rather than -O0/-O1 keeps the numeric kernels within a few times of
# Release, so the full suite, golden and KV-compression tests included, fits CI's budget on 2 cores.
# No test asserts a speed (speed lives in bench/); only the avx2 variant's goldens are left out (below).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
scripts/fetch_model.sh
scripts/fetch_model.sh --gemma
scripts/fetch_model.sh --qwen

cmake --preset asan >/dev/null
cmake --build build-asan -j"$(nproc)" --target tappa tappa_tests quickstart  # every target a ctest runs

# halt_on_error/abort_on_error: the first report ends the process with a failure. detect_leaks: the
# CLI tests' `tappa` processes are checked for leaks at exit too. UBSan prints the stack of each report.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd build-asan
if [ $# -gt 0 ]; then
  exec ctest --output-on-failure -j"$(nproc)" --timeout 3600 "$@"
fi
# Everything, except that the avx2 variant's entry runs its kernel tests only (18 s here): its logit
# goldens run Qwen, Gemma and SmolLM2 whole (most of the entry's 372 s under the sanitizers,
# 2026-12-04) and add little code under ASan that the kernel tests and the main suite's goldens do
# not already run, while CI's 90 minutes are short on an AVX2 machine (docs/RELIABILITY.md). The
# unsanitized suite (scripts/test.sh) still runs the entry whole.
ctest --output-on-failure -j"$(nproc)" --timeout 3600 -E '^cpu_variant_avx2$'
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  (cd .. && TAPPA_CPU_VARIANT=avx2 build-asan/tappa_tests --gtest_brief=1 \
    --gtest_filter='Attention*:Matmul*:BackendParity*:KvFormat.*:GemmaOps*')  # as ctest runs it: from the source dir
fi
