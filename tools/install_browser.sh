#!/usr/bin/env bash
# Install Debian's Chromium for the real-browser web test (tests/test_web.py).
# Idempotent: does nothing when /usr/bin/chromium is already there.  Needs root (or sudo) for apt-get.
# The test drives it through Playwright's Python package (pip install playwright), never `playwright install`.
set -euo pipefail

BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ]; then
    echo "chromium already installed: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: $BROWSER is missing and installing it needs root (run: apt-get install -y chromium as root)" >&2
    exit 1
fi

echo "installing chromium with apt-get ..."
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
echo "installed: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
