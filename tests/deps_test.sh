#!/usr/bin/env bash
# Every library scripts/install_deps.sh installs is found by name (issue #13): with the package removed,
# configure stops with the one line "tappa: missing dependency: ... install the Debian package PKG"
# (cmake/TappaDeps.cmake), and builds again once it is back. Removing packages is destructive, so this
# runs only in the disposable root of scripts/test_fresh_root.sh (it refuses elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /.tappa-fresh-root ]; then
  echo "deps_test.sh: runs only inside scripts/test_fresh_root.sh's root (it removes packages)" >&2
  exit 2
fi
scripts/install_deps.sh >/dev/null
# The libraries and pkgconf, read from install_deps.sh itself, so a package added there is tested here.
mapfile -t PKGS < <(scripts/install_deps.sh --list | grep -E -- '-dev$|^pkgconf$')
[ ${#PKGS[@]} -ge 7 ] || { echo "deps_test.sh: only ${#PKGS[@]} library packages listed" >&2; exit 1; }

configure() { rm -rf /tmp/deps-build; cmake -S . -B /tmp/deps-build -DTAPPA_MPI=ON -DTAPPA_PYTHON_MODULE=ON >/tmp/deps-configure.log 2>&1; }
configure || { cat /tmp/deps-configure.log >&2; echo "deps_test.sh: configure fails with every package installed" >&2; exit 1; }

failed=0
# What removing a package must take away: pkgconf's program is in pkgconf-bin (CMake also finds it by the
# name pkgconf), so "pkgconf missing" means both are gone; apt-get install pkgconf brings both back.
removed_with() { case "$1" in pkgconf) echo "pkgconf pkgconf-bin";;
  python3-dev) echo "python3-dev libpython3-dev libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev";; *) echo "$1";; esac; }

for p in "${PKGS[@]}"; do
  # shellcheck disable=SC2046  # word splitting of the package list is intended
  dpkg -r --force-depends $(removed_with "$p") >/dev/null 2>&1
  if configure; then
    echo "FAIL $p: removed, yet configure succeeded"; failed=1
  else
    line=$(grep -E '^tappa: missing dependency: ' /tmp/deps-configure.log || true)
    if [ "$(printf '%s\n' "$line" | grep -c .)" -eq 1 ] && grep -q "install the Debian package $p " <<<"$line"; then
      echo "ok   $p: $line"
    else
      echo "FAIL $p: configure failed without one line naming it:"; sed 's/^/     /' /tmp/deps-configure.log | head -n 12
      failed=1
    fi
  fi
  # Reinstall everything removed, not only $p: apt refuses to install python3-dev alone while
  # python3.11-dev (still installed) lacks the libpython3.11-dev that was removed with it.
  # shellcheck disable=SC2046
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(removed_with "$p") \
    >/tmp/deps-reinstall.log 2>&1 \
    || { tail -n 8 /tmp/deps-reinstall.log >&2; echo "deps_test.sh: could not reinstall $p" >&2; exit 1; }
done
configure || { cat /tmp/deps-configure.log >&2; echo "deps_test.sh: configure fails after reinstalling" >&2; exit 1; }
rm -rf /tmp/deps-build
[ "$failed" -eq 0 ] && echo "deps_test.sh: ok, ${#PKGS[@]} packages each named when missing"
exit "$failed"
