#!/usr/bin/env bash
# Renders a tappa report with headless Chromium (Debian's `chromium` package) to check that it opens
# and looks right: scripts/screenshot_report.sh REPORT_DIR [OUT.png] [HEIGHT]
set -euo pipefail
dir="${1:?usage: scripts/screenshot_report.sh REPORT_DIR [OUT.png] [HEIGHT]}"
out="${2:-${dir}/screenshot.png}"
height="${3:-6000}"
[ -f "${dir}/report.html" ] || { echo "screenshot_report.sh: error: ${dir}/report.html not found" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq chromium >/dev/null
fi
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="1400,${height}" \
  --screenshot="$(realpath -m "${out}")" "file://$(realpath "${dir}")/report.html" 2>/dev/null
echo "screenshot: ${out}"
