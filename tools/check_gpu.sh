#!/usr/bin/env bash
# Checks a GPU machine in one command (about 8 minutes on a datacenter GPU once the environment
# exists): installs the stack if needed (tools/setup_env.sh), prints the GPU and the versions,
# trains and tests the demo configs on CUDA in float32 and with --amp (float16, bfloat16), runs
# the CUDA resolution sweep, and writes work_dirs/check_gpu/check_gpu.json and check_gpu.md.
# Extra arguments go to tools/check_gpu.py (e.g. --iters 20, --skip-sweep, --work-dir DIR).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$repo/tools/setup_env.sh" | tail -n 1)"
cd "$repo"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi || true; else echo "nvidia-smi not found"; fi
exec "$py" tools/check_gpu.py "$@"
