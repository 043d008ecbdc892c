#!/usr/bin/env bash
# The project's test command (see README): starts the services the tests
# need if they are down, then runs every test of the workspace. The tests
# create their own Python virtualenv with Celery under target/ (see
# testsupport/), start real Celery workers, and use the real Redis, RabbitMQ
# and PostgreSQL on 127.0.0.1, headless Chromium for the web UI, and
# promtool for the metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# Headless Chromium + chromedriver (web UI tests) and promtool (scrape
# validation), from Debian's packages when missing; then the tests that
# need them must run, never skip.
scripts/browser.sh
scripts/promtool.sh
export CNC_REQUIRE_BROWSER=1 CNC_REQUIRE_PROMTOOL=1
# Doc tests first, so the last lines are the main run's summary.
cargo test --workspace --all-features --doc --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast "$@"
else
  cargo test --workspace --all-features --no-fail-fast "$@"
fi
