#!/usr/bin/env bash
# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer, part of ASan):
# builds the CMake preset "asan" (Debug -O1, -fno-sanitize-recover=all) into build-asan/ and runs the
# test suite there. Any sanitizer report aborts the process it happens in — a test binary or a `tappa`
# run by a CLI test — so the test fails and ctest prints the report.
#
#   scripts/test_sanitize.sh            # what CI runs
#   scripts/test_sanitize.sh -R Gguf    # extra arguments go to ctest (here: only the GGUF tests)
#
# Time: the sanitized build runs the numeric kernels several times slower than Release. A few long
# numerical tests that only repeat, at a larger size, code paths that shorter tests already cover under
# the sanitizers are left out, and so is the one test that asserts a speed (SLOW_TESTS below; set
# TAPPA_SANITIZE_ALL=1 to run them too).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh
scripts/fetch_model.sh

cmake --preset asan >/dev/null
cmake --build build-asan -j"$(nproc)" --target tappa tappa_tests

# Long tests (each > 4 s in Release, ctest's cost data; several times that sanitized) are left out so
# the whole CI fits its 90 minutes on 2 cores: they repeat, at full model size, the kernels, KV-cache
# and runner paths that the shorter tests (EngineTiny, Kv*, EvalKv*, Gemma ops/config, Analyze, the
# hostile and GGUF tests) already run under the sanitizers. TokenizerSpeed/TokenizerHostile's timing
# test asserts a Release speed, which a sanitized build cannot meet by design.
SLOW_TESTS='KvCompress\.|EngineGolden\.|GemmaGolden\.|GemmaKv\.|Determinism\.Seeded|EvalMc\.HandChecked|EvalKvResume\.|EvalKvReplay\.MatchesTheEngines|TokenizerHostile\.NoCrashNoQuadraticTime|TokenizerSpeed\.'
EXCLUDE=()
[ "${TAPPA_SANITIZE_ALL:-0}" = 1 ] || EXCLUDE=(-E "$SLOW_TESTS")

# halt_on_error/abort_on_error: the first report ends the process with a failure. detect_leaks: the
# CLI tests' `tappa` processes are checked for leaks at exit too. UBSan prints the stack of each report.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd build-asan
ctest --output-on-failure -j"$(nproc)" --timeout 3600 "${EXCLUDE[@]}" "$@"
