#!/usr/bin/env bash
# The one binary must start on any x86-64 CPU and run AVX-512 code only after dispatch chose it
# (issue #22). A kernel source is compiled once per variant (cmake/cpu_variants.cmake), and an inline
# function of a shared header (a std:: template, a helper) compiled inside the avx512 build can be the
# copy the linker keeps for the whole program: on an AVX2-only CPU that is an illegal instruction far
# from any kernel, which this machine (with AVX-512) would never show. So: disassemble the binary and
# fail on AVX-512 instructions (zmm registers, opmask registers, embedded broadcasts) in any function
# outside the avx512 variant's namespace, and on AVX/FMA instructions (ymm, vfmadd) outside the avx2
# and avx512 namespaces.
#
#   tests/isa_leak_test.sh BINARY...
set -euo pipefail
command -v objdump >/dev/null || { echo "isa_leak_test: objdump (binutils) not found"; exit 1; }
rc=0
for bin in "$@"; do
  bad=$(objdump -d --no-show-raw-insn -C "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = $0; next }
    /zmm|%k[1-7]|\{1to[0-9]+\}/ { if (fn !~ /::avx512::/) n512[fn]++ }
    /ymm|vfmadd|vfnmadd|vfmsub/ { if (fn !~ /::avx512::|::avx2::/) n256[fn]++ }
    END {
      for (f in n512) print "AVX-512 outside the avx512 variant (" n512[f] " instructions): " f
      for (f in n256) print "AVX2/FMA outside the avx2/avx512 variants (" n256[f] " instructions): " f
    }' | sort | sed -n 1,20p)
  n=$(objdump -d --no-show-raw-insn "$bin" | grep -c zmm || true)
  if [ -n "$bad" ]; then
    echo "$bin:"; echo "$bad"; rc=1
  else
    echo "$bin: no wide-ISA instruction outside its variant ($n zmm instructions, all in avx512 functions)"
  fi
done
exit $rc
