#!/usr/bin/env bash
# Make `promtool` available (Debian's `prometheus` package provides it): the
# cnc-metrics tests validate every scrape with `promtool check metrics`.
# Idempotent and quiet: does nothing when promtool is already on PATH.
# Usage: scripts/promtool.sh   (CI calls it, then sets CNC_REQUIRE_PROMTOOL=1)
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "promtool.sh: promtool missing and not root (no sudo); install Debian's prometheus package" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Only promtool is needed: skip the recommended extras (node exporter, etc.).
if ! $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The package's postinst may start the server; we only want the binary.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null
