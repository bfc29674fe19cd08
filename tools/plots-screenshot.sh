#!/usr/bin/env bash
# Renders `dvc plots show` to a PNG on a machine without network access, as a user would see the page.
#
#   tools/plots-screenshot.sh OUT.png [VEGA_DIR] [-- dvc plots show arguments...]
#
# DVC's page loads vega, vega-lite and vega-embed from a CDN. VEGA_DIR (default build/vega) holds
# the unpacked npm builds, made once with:
#   mkdir -p build/vega && cd build/vega && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2 &&
#   for f in *.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
# The page's three script tags are pointed at them and headless Chromium (Debian: apt-get install
# chromium) takes the screenshot. The page names no charset: the CDN serves the scripts as UTF-8,
# while scripts of a file:// page without one are read as windows-1252 (vega's minus sign drawn
# as "âˆ’"), so the page
# is given <meta charset="utf-8">. Run from the repository root after `dvc repro`.
set -euo pipefail
out=$(realpath -m "$1")
vega=$(realpath "${2:-build/vega}")
shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift
page=$(mktemp -d)
dvc plots show --out "$page" "$@" > /dev/null
sed -i \
  -e 's#<head>#<head><meta charset="utf-8">#' \
  -e "s#https://cdn.jsdelivr.net/npm/vega@5.20.2#file://$vega/vega-5.20.2/package/build/vega.min.js#" \
  -e "s#https://cdn.jsdelivr.net/npm/vega-lite@5.2.0#file://$vega/vega-lite-5.2.0/package/build/vega-lite.min.js#" \
  -e "s#https://cdn.jsdelivr.net/npm/vega-embed@6.18.2#file://$vega/vega-embed-6.18.2/package/build/vega-embed.min.js#" \
  "$page/index.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
  --screenshot="$out" --window-size="${WINDOW:-1400,5000}" --virtual-time-budget=20000 \
  "file://$page/index.html" 2> /dev/null
echo "$out"
