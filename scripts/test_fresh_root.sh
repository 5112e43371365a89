#!/usr/bin/env bash
# The README's two commands on a bare Debian 12 root, as a new user would run them (issue #13).
#
# A green CI on a machine where someone once installed a package by hand proves nothing about a
# fresh machine: libstb-dev was missing from scripts/install_deps.sh for weeks while CI passed. So this
# script builds a root that has nothing but Debian's minimal base (debootstrap --variant=minbase
# bookworm) in build-fresh-root/root, copies a clean clone of the commit into it, and runs there:
#   1. scripts/quickstart.sh   (the main job: install, build, fetch the model, the TAPPA report)
#   2. scripts/test.sh         (the test command: install, build, fetch the models, every test)
#   3. tests/deps_test.sh      (each library package removed in turn: configure names the package)
#
# The root shares nothing with this machine but the network path to the registries: /etc/resolv.conf,
# the extra CA certificates of /usr/local/share/ca-certificates/ and the certificate variables
# (PIP_CERT, SSL_CERT_FILE, REQUESTS_CA_BUNDLE) that reach them through this network's TLS proxy, and
# apt's Check-Valid-Until=false when this machine's apt has it (its mirror serves a dated snapshot whose
# Release files have expired). No bind mount of /usr, no venv, no model, no ccache; only the public
# evaluation data (../shared/data) is bound in, read-only, so the tests that read it do not skip. /proc, /dev and
# /dev/pts are mounted for the chroot and unmounted on every exit, a failing step included.
#
#   scripts/test_fresh_root.sh                 # all three steps (what .ci/run runs)
#   scripts/test_fresh_root.sh quickstart deps # only these steps (the root is still made afresh)
#
# Needs root (chroot, mount) and debootstrap (installed here when missing). Logs and step times:
# build-fresh-root/logs/. Environment: FRESH_ROOT_MIRROR (default: http://deb.debian.org/debian);
# FRESH_ROOT_KEEP=1 keeps the root after a pass (it is deleted then; a failed root is always kept).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(quickstart test deps)
for s in "${STEPS[@]}"; do
  case "$s" in quickstart|test|deps) ;; *) echo "usage: scripts/test_fresh_root.sh [quickstart|test|deps]..." >&2; exit 2;; esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "test_fresh_root.sh: needs root (debootstrap, chroot, mount)" >&2
  exit 2
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

WORK="$REPO/build-fresh-root"
ROOT="$WORK/root"
LOGS="$WORK/logs"
MIRROR="${FRESH_ROOT_MIRROR:-http://deb.debian.org/debian}"
COMMIT=$(git rev-parse HEAD)

MOUNTED=()
unmount_all() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
  done
  MOUNTED=()
}
trap unmount_all EXIT
root_has_mounts() { grep -q " $ROOT/" /proc/mounts; }  # before any rm -rf of the root
trap 'exit 130' INT TERM

# A root left by an earlier run that was killed may still have its mounts: undo them before deleting.
if [ -d "$ROOT" ]; then
  for m in shared/data dev/pts dev proc; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && { umount "$ROOT/$m" || umount -l "$ROOT/$m"; }
  done
  if root_has_mounts; then
    echo "[fresh-root] $ROOT still has mounts (see /proc/mounts): not deleting it" >&2
    exit 1
  fi
  rm -rf --one-file-system "$ROOT"
fi
mkdir -p "$ROOT" "$LOGS"
: >"$LOGS/times.txt"

stamp() { date +%s; }
step_time() {  # NAME START
  local t=$(( $(stamp) - $2 ))
  printf '%-12s %5d s\n' "$1" "$t" | tee -a "$LOGS/times.txt"
}

t0=$(stamp)
echo "[fresh-root] debootstrap --variant=minbase bookworm into $ROOT (log $LOGS/debootstrap.log)"
if ! debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1; then
  tail -n 20 "$LOGS/debootstrap.log" >&2
  echo "[fresh-root] debootstrap failed" >&2
  exit 1
fi
step_time debootstrap "$t0"

# The network path, and nothing else.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
if apt-config dump 2>/dev/null | grep -q 'Acquire::Check-Valid-Until "false"'; then
  echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99fresh-root-valid-until"
fi
mkdir -p "$ROOT/usr/local/share/ca-certificates"
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
  cp -r /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
CERT_ENV=()
for v in PIP_CERT SSL_CERT_FILE REQUESTS_CA_BUNDLE; do
  # The bundle that ca-certificates writes in the root (/etc/ssl/certs/ca-certificates.crt) holds the
  # copied extra certificates once install_deps.sh has installed the package.
  [ -n "${!v:-}" ] && CERT_ENV+=("$v=/etc/ssl/certs/ca-certificates.crt")
done

# A clean clone of the commit: what is committed, nothing ignored or untracked.
echo "[fresh-root] cloning $COMMIT into the root"
git clone -q --no-hardlinks "$REPO" "$ROOT/tappa"
git -C "$ROOT/tappa" checkout -q "$COMMIT"
touch "$ROOT/.tappa-fresh-root"  # tests/deps_test.sh removes packages only where this marker is

mount -t proc proc "$ROOT/proc" && MOUNTED+=("$ROOT/proc")
mount --bind /dev "$ROOT/dev" && MOUNTED+=("$ROOT/dev")
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts" && MOUNTED+=("$ROOT/dev/pts")
# The public evaluation data beside the checkout (../shared/data: wikitext, PIQA, ...), read-only at the
# same relative place (/shared/data beside /tappa), so the tests that read it run here too instead of
# skipping. It is data, not software: it cannot stand in for a missing install step.
DATA="$REPO/../shared/data"
if [ -d "$DATA" ]; then
  mkdir -p "$ROOT/shared/data"
  mount --bind "$DATA" "$ROOT/shared/data" && MOUNTED+=("$ROOT/shared/data")
  # Read-only or not at all: the root is deleted with rm -rf later, and a bind of the same filesystem
  # is not stopped by --one-file-system.
  mount -o remount,bind,ro "$ROOT/shared/data" \
    || { echo "[fresh-root] could not make $ROOT/shared/data read-only" >&2; exit 1; }
else
  echo "[fresh-root] no $DATA here: the tests that read it will skip in the root"
fi

in_root() {  # NAME COMMAND: runs COMMAND in the root's clone with a clean environment, logs, times it
  local name=$1 cmd=$2 t rc=0
  t=$(stamp)
  echo "[fresh-root] $name: $cmd (log $LOGS/$name.log)"
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 TERM=dumb "${CERT_ENV[@]}" \
      /bin/bash -c "cd /tappa && $cmd" >"$LOGS/$name.log" 2>&1 || rc=$?
  step_time "$name" "$t"
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$LOGS/$name.log" >&2
    echo "[fresh-root] $name FAILED (exit $rc) in the bare root; whole log: $LOGS/$name.log" >&2
    exit 1
  fi
}

for s in "${STEPS[@]}"; do
  case "$s" in
    quickstart) in_root quickstart scripts/quickstart.sh
                test -s "$ROOT/tappa/tappa-report/report.html" \
                  || { echo "[fresh-root] quickstart wrote no tappa-report/report.html" >&2; exit 1; } ;;
    test)       in_root test scripts/test.sh ;;
    deps)       in_root deps tests/deps_test.sh ;;
  esac
done
step_time total "$t0"
# A passed root is only disk (builds and models, a few GB) that the later CI steps need more; a failed
# one is kept for a look inside. FRESH_ROOT_KEEP=1 keeps it either way.
if [ "${FRESH_ROOT_KEEP:-0}" != 1 ]; then
  unmount_all
  if root_has_mounts; then
    echo "[fresh-root] $ROOT still has mounts: left in place" >&2
  else
    rm -rf --one-file-system "$ROOT"
  fi
fi
echo "[fresh-root] ok: ${STEPS[*]} passed in a bare Debian 12 root (times: $LOGS/times.txt)"
