#!/usr/bin/env bash
# ctest cli_public_includes (issue #15): the CLI is a client of the public API like any other program.
# Every #include in src/cli must name a public header ("tappa/..."), one of the CLI's own ("cli/..."),
# or a standard or third-party header in angle brackets (<CLI/CLI.hpp>, <nlohmann/json.hpp>, <mpi.h>,
# <cstdio>, ...). Anything else — a header of the library's private src/ layers, quoted or in angle
# brackets — fails, naming the file, the line and the header.
#
#   tests/cli_public_includes.sh SOURCE_DIR
#
# Before checking SOURCE_DIR the script checks itself on a scratch tree holding one allowed and one
# forbidden include, so a rule that stopped catching anything fails too.
#
# Exemptions: none today. A CLI file that must still include an internal header goes into EXEMPT as
# "src/cli/FILE:HEADER" with a comment saying why — never silently.
set -euo pipefail
EXEMPT=()

# check ROOT: prints every forbidden include under ROOT/src/cli; status 1 if there is one.
check() {
  local root=$1 f n line header top bad=0
  for f in "$root"/src/cli/*.cpp "$root"/src/cli/*.h; do
    [ -e "$f" ] || continue
    while IFS=: read -r n line; do
      header=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]\([^">]*\)[">].*/\1/p' <<<"$line")
      [ -n "$header" ] || continue
      case "$header" in tappa/*|cli/*) continue ;; esac
      if [[ $line =~ include[[:space:]]*\< ]]; then
        # <...>: a system or third-party header, unless its first folder is a layer of src/.
        top=${header%%/*}
        if [ "$top" = "$header" ] || [ ! -d "$root/src/$top" ]; then continue; fi
      fi
      local rel=${f#"$root"/} exempt=0 e
      for e in "${EXEMPT[@]+"${EXEMPT[@]}"}"; do [ "$e" = "$rel:$header" ] && exempt=1; done
      if [ $exempt = 1 ]; then
        echo "exempt (listed in EXEMPT): $rel includes $header"
        continue
      fi
      echo "$rel:$n: includes the internal header \"$header\"; the CLI may use include/tappa only"
      bad=1
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$f" || true)
  done
  return $bad
}

root=${1:?usage: cli_public_includes.sh SOURCE_DIR}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src/cli" "$scratch/src/kv"
printf '#include <cstdio>\n#include <CLI/CLI.hpp>\n#include "cli/common.h"\n#include "tappa/kv.h"\n' >"$scratch/src/cli/ok.cpp"
if ! check "$scratch" >/dev/null; then echo "self-test: allowed includes were refused"; exit 1; fi
printf '#include "tappa/kv.h"\n  #  include "kv/compressor.h"\n' >"$scratch/src/cli/bad.cpp"
if check "$scratch" >/dev/null; then echo "self-test: an internal include was not caught"; exit 1; fi
printf '#include <kv/compressor.h>\n' >"$scratch/src/cli/bad.cpp"
if check "$scratch" >/dev/null; then echo "self-test: an internal include in <> was not caught"; exit 1; fi

if check "$root"; then
  echo "src/cli includes only public (tappa/), CLI (cli/) and system/third-party headers"
else
  exit 1
fi
