#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages) for the
# browser tests of cnc-web. Idempotent and quiet: does nothing when both are
# already there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null

command -v chromium >/dev/null && command -v chromedriver >/dev/null
echo "browser.sh: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version 2>/dev/null | head -1)"
