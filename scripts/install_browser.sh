#!/bin/sh
# Installs Debian's Chromium for the display's browser tests when it is missing.
# Idempotent and quiet: nothing is done when /usr/bin/chromium is already there, and apt's
# output is shown only when it fails. The browser comes from the system's packages only;
# Playwright is never asked to download one.
set -eu
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update && $SUDO apt-get install -y chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser: apt-get could not install chromium" >&2
    exit 1
fi
[ -x /usr/bin/chromium ] || { echo "install_browser: /usr/bin/chromium still missing" >&2; exit 1; }
