#!/usr/bin/env bash
# Make sure Debian's headless Chromium (and its driver) is installed for the browser tests.
# Used by `make test` (and so by CI). Installs the packages only when the binary is missing;
# Playwright then drives this system browser and never downloads one of its own.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "ensure-chromium: need root to run: $*" >&2; return 1; fi
}

packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
# A CJK font, so screenshots of the maps and reports show Chinese names instead of empty boxes.
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || packages+=(fonts-wqy-zenhei)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "ensure-chromium: installing Debian packages ${packages[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# Debian's wrapper script prints a harmless shell warning on some machines; keep the version only.
echo "ensure-chromium: $(chromium --version 2>/dev/null | head -n 1)"
