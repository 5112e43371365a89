#!/usr/bin/env bash
# Configures and builds tappa on a machine without its Debian build dependencies (the H200 machine's
# CUDA image), from a copy of them made by bench/h200_collect_deps.sh. Run the binaries with
# LD_LIBRARY_PATH=DEPS/rt (set here for the build's own test discovery); pkgconf runs from the copy
# when the machine has no pkg-config; <cstdint> is force-included (g++ 13 needs it where a file
# relies on another header for it). Prints the build's CPU time (user + sys, GNU time's or Python's getrusage).
#
#   bench/h200_build.sh DEPS SRC BUILD [cmake -D options...]
set -uo pipefail
deps=$(realpath "$1"); src=$(realpath "$2"); b=$3; shift 3
lib=$deps/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH="$deps/rt:${LD_LIBRARY_PATH:-}"
for pc in "$lib"/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc; do
  [ -e "$pc" ] && sed -i "s|^prefix=/usr\$|prefix=$deps/usr|; s|^libdir=/usr/|libdir=$deps/usr/|; s|^includedir=/usr/|includedir=$deps/usr/|" "$pc"
done
if ! command -v pkg-config >/dev/null; then
  mkdir -p "$deps/wrap"
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$lib" "$deps/usr/bin/pkgconf" >"$deps/wrap/pkg-config"
  chmod +x "$deps/wrap/pkg-config"
  export PATH="$deps/wrap:$PATH"
fi
export PKG_CONFIG_PATH="$lib/pkgconfig:$deps/usr/share/pkgconfig"
export CPATH="$deps/usr/include:$deps/usr/include/x86_64-linux-gnu"
export LIBRARY_PATH="$lib"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src" -B "$b" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="-include cstdint" -DCMAKE_PREFIX_PATH="$deps/usr" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$lib" -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$lib" "$@" \
  >"$b.configure.log" 2>&1 || { tail -40 "$b.configure.log"; exit 1; }
grep -E "tappa: CUDA|CMAKE_CUDA" "$b.configure.log"
T=/usr/bin/time; [ -x $T ] || T=$deps/usr/bin/time
if [ -x "$T" ]; then
  "$T" -v cmake --build "$b" -j"$(nproc)" >"$b.build.log" 2>&1
  rc=$?
  grep -E "User time|System time|Elapsed|Maximum resident|Exit status" "$b.build.log"
else
  python3 - "$b" <<'PY'
import resource, subprocess, sys, time, os
t = time.time()
with open(sys.argv[1] + ".build.log", "w") as f:
    rc = subprocess.call(["cmake", "--build", sys.argv[1], f"-j{os.cpu_count()}"], stdout=f, stderr=subprocess.STDOUT)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"build {sys.argv[1]}: user {u.ru_utime:.1f} s, sys {u.ru_stime:.1f} s, wall {time.time() - t:.1f} s, rc {rc}")
sys.exit(rc)
PY
  rc=$?
fi
[ $rc -eq 0 ] || grep -E "error|Error" "$b.build.log" | head -30
exit $rc
