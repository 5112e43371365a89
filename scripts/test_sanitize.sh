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
# No test asserts a speed (speed lives in bench/), so nothing needs to be excluded for being slower here.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
scripts/fetch_model.sh
scripts/fetch_model.sh --gemma
scripts/fetch_model.sh --qwen

cmake --preset asan >/dev/null
cmake --build build-asan -j"$(nproc)" --target tappa tappa_tests

# halt_on_error/abort_on_error: the first report ends the process with a failure. detect_leaks: the
# CLI tests' `tappa` processes are checked for leaks at exit too. UBSan prints the stack of each report.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd build-asan
ctest --output-on-failure -j"$(nproc)" --timeout 3600 "$@"
