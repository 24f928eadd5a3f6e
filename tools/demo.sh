#!/usr/bin/env bash
# The main job: installs the stack if needed, generates the demo datasets, trains and evaluates
# a nano InLine-PVT Mask R-CNN and UperNet on CPU. Extra arguments go to tools/demo.py.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$repo/tools/setup_env.sh" | tail -n 1)"
cd "$repo"
exec "$py" tools/demo.py "$@"
