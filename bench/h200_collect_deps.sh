#!/usr/bin/env bash
# Copies the build dependencies of tappa (headers, libraries, pkg-config and CMake files of the
# Debian packages scripts/install_deps.sh installs) into DIR/usr, so that a machine without them
# (the H200 machine's CUDA image: no Debian -dev packages, no network) can configure and build
# tappa with bench/h200_build.sh. Static archives are left out except gtest/gmock's (no shared
# variant); documentation too. Run on a Debian machine where the packages are installed.
#
#   bench/h200_collect_deps.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
pkgs=(libstb-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
      libbenchmark-dev libbenchmark1debian libcpp-httplib-dev libcpp-httplib0.11 libssl-dev libssl3 zlib1g-dev zlib1g
      libbrotli-dev libbrotli1 pkgconf pkgconf-bin libpkgconf3)
for p in "${pkgs[@]}"; do
  dpkg -L "$p" | while read -r f; do
    { [ -f "$f" ] || [ -L "$f" ]; } || continue
    case "$f" in
      /usr/share/doc/*|/usr/share/man/*|/usr/share/lintian/*) continue ;;
      *libgtest*.a|*libgmock*.a|*libbenchmark*.a) ;;
      *.a) continue ;;
      *pcre2-16*|*pcre2-32*|*pcre2-posix*) continue ;;
    esac
    mkdir -p "$dir$(dirname "$f")"
    cp -a "$f" "$dir$f"
  done
done
# Header-only stb (libstb-dev's headers only).
mkdir -p "$dir/usr/include" && cp -a /usr/include/stb "$dir/usr/include/"
# The shared libraries tappa's binaries load, for LD_LIBRARY_PATH=$dir/rt (bench/h200_build.sh).
mkdir -p "$dir/rt"
for f in libcpp-httplib.so.0.11 libhwy.so.1 libhwy_contrib.so.1 libbenchmark.so.1debian libbrotlicommon.so.1 \
         libbrotlidec.so.1 libbrotlienc.so.1; do
  ln -sf ../usr/lib/x86_64-linux-gnu/$f "$dir/rt/$f"
done
# GNU time, for the build's CPU figures.
mkdir -p "$dir/usr/bin" && cp /usr/bin/time "$dir/usr/bin/time"
# pkgconf's binary under its usual name.
[ -e "$dir/usr/bin/pkg-config" ] || ln -s pkgconf "$dir/usr/bin/pkg-config"
du -sh "$dir"
