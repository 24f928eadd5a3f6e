#!/usr/bin/env bash
# The test command: installs the stack if needed (idempotent, see tools/setup_env.sh), then runs
# the whole suite. Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/attention -x`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$repo/tools/setup_env.sh" | tail -n 1)"
cd "$repo"
exec "$py" -m pytest "$@"
