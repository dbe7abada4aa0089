#!/usr/bin/env bash
# Debian packages the project uses outside Python, installed only when missing and only when
# running as root with apt-get (otherwise it says what it skipped and exits 0).
#   --fonts  a CJK font for the pack's chart labels (fonts-wqy-microhei)
#   --all    also Chromium, which the tests use to render the HTML pack headless
set -uo pipefail
want_chromium=0
[ "${1:-}" = "--all" ] && want_chromium=1

packages=()
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then packages+=(fonts-wqy-microhei); fi
if [ "$want_chromium" = 1 ] && ! command -v chromium >/dev/null 2>&1; then packages+=(chromium); fi
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system packages not installed (not root or no apt-get): ${packages[*]}" >&2
  exit 0
fi
echo "installing Debian packages: ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null 2>&1 || true
apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
  || echo "apt-get install ${packages[*]} failed; the chart falls back to a Latin font" >&2
exit 0
