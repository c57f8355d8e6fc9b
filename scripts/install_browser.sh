#!/usr/bin/env bash
# Install Chromium and its WebDriver (used by the console's browser tests, via tests/browser.py)
# for CI and developers. Idempotent and non-interactive: does nothing when both are installed.
# Debian's chromium and chromium-driver packages put the binaries at /usr/bin/chromium and
# /usr/bin/chromedriver; tests use those paths directly, so Selenium never downloads a browser.
# (Debian's /usr/bin/chromium is a shell wrapper; its --version may also print a harmless "[: ...
# unexpected operator" where /dev/shm is mounted twice, as in some containers: hence 2>/dev/null.)
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null)"
    echo "chromedriver already installed: $(/usr/bin/chromedriver --version)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null

for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    if ! [ -x "$binary" ]; then
        echo "chromium and chromium-driver installed but $binary is missing" >&2
        exit 1
    fi
done
echo "installed $(/usr/bin/chromium --version 2>/dev/null)"
echo "installed $(/usr/bin/chromedriver --version)"
