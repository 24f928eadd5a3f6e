#!/usr/bin/env bash
# The test command: installs the stack if needed (idempotent, see tools/setup_env.sh), then runs
# the whole suite on every core. Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/attention -x`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$repo/tools/setup_env.sh" | tail -n 1)"
cd "$repo"
# One pytest worker per core (pytest-xdist): the suite's config, training and export tests are
# independent processes' worth of work. MMVITATTN_TEST_WORKERS=0 runs in this process.
exec "$py" -m pytest -n "${MMVITATTN_TEST_WORKERS:-auto}" "$@"
