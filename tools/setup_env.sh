#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs the pinned stack in the
# order that works: torch + torchvision as a pair, then mmcv 2.1.0 compiled with CPU ops
# (built once, reused from pip's wheel cache), then mmengine / mmdet / mmseg / timm, then this
# package in editable mode. Idempotent: when nothing changed a second run only checks imports.
#
#   MMVITATTN_VENV   where the environment lives (default: ~/.cache/mmvitattn/venv-py<version>)
#   PYTHON           the interpreter to build it from (default: python3)
#   MMVITATTN_MMCV_CUDA=1  on a GPU machine, try mmcv's own CUDA build first (needs an nvcc that
#                    matches torch's CUDA; known to fail on current torch). By default mmcv gets CPU
#                    ops and `import mmvitattn` supplies the CUDA ops the configs use.
#
# Prints the environment's python path as its last line of output on stdout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_python="${PYTHON:-python3}"
pyver="$("$base_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
venv="${MMVITATTN_VENV:-$HOME/.cache/mmvitattn/venv-py$pyver}"
log() { echo "[setup] $*" >&2; }

torch_pair_works() {
    # A torch/torchvision pair is usable when torchvision's compiled ops load against that torch.
    "$1" - <<'PY' >/dev/null 2>&1
import torch, torchvision
torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
PY
}
gpu_visible() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_sees_gpu() { "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' >/dev/null 2>&1; }
# On a GPU machine a pair whose torch cannot use the GPU is not kept (the index's pair is a CUDA build).
torch_pair_fits() { torch_pair_works "$1" && { ! gpu_visible || torch_sees_gpu "$1"; }; }

mmcv_cuda="${MMVITATTN_MMCV_CUDA:-0}"
case "$mmcv_cuda" in 0|1) ;; *) log "ERROR: MMVITATTN_MMCV_CUDA must be 0 or 1, got '$mmcv_cuda'"; exit 1 ;; esac

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    if torch_pair_fits "$base_python"; then
        log "reusing the working torch/torchvision of $base_python"
        "$base_python" -m venv --system-site-packages "$venv"
    else
        "$base_python" -m venv "$venv"
    fi
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

# Everything that decides what gets installed; when unchanged and imports work, stop here.
stamp_file="$venv/.mmvitattn-stack"
stamp="$(cat "$repo/tools/setup_env.sh" "$repo/setup.py" "$repo/requirements"/*.txt | sha256sum | cut -c1-16)"
installed_here() {
    (cd / && "$py" -c "import mmvitattn, os, sys; sys.exit(os.path.dirname(os.path.dirname(mmvitattn.__file__)) != sys.argv[1])" "$repo") >/dev/null 2>&1
}
mmcv_cuda_failed="$venv/.mmvitattn-mmcv-cuda-failed"  # a failed CUDA build is not retried on every run
mmcv_has_cuda() {
    "$py" -c "import sys, mmcv._ext as e; sys.exit(e.get_compiling_cuda_version() == 'not available')" >/dev/null 2>&1
}
mmcv_cuda_settled() { [ "$mmcv_cuda" = 0 ] || [ -f "$mmcv_cuda_failed" ] || mmcv_has_cuda; }
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && mmcv_cuda_settled \
        && "$py" -c "import torch, torchvision, mmcv.ops, mmdet, mmseg, timm" >/dev/null 2>&1; then
    installed_here || "${pip[@]}" install --quiet --no-deps --no-build-isolation -e "$repo" >&2
    log "environment up to date: $venv"
    echo "$py"
    exit 0
fi

log "build tools"
"${pip[@]}" install --quiet -r "$repo/requirements/build.txt" >&2

if torch_pair_fits "$py"; then
    log "keeping installed torch $("$py" -c 'import torch; print(torch.__version__)')"
else
    # The machine's pip may list a local CPU-only torch wheel on its find-links path; it has no
    # matching torchvision. Ignore local pip settings for this one install so the pair comes
    # together from the package index.
    log "torch + torchvision (a few minutes the first time)"
    PIP_FIND_LINKS= "${pip[@]}" install --isolated --quiet -r "$repo/requirements/torch.txt" >&2
    torch_pair_works "$py" || { log "ERROR: torch/torchvision still do not import together"; exit 1; }
fi
if gpu_visible && ! torch_sees_gpu "$py"; then
    log "WARNING: nvidia-smi sees a GPU but torch $("$py" -c 'import torch; print(torch.__version__)') cannot" \
        "use it (driver older than torch's CUDA build?); training will run on the CPU"
fi

mmcv_works() { "$py" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" >/dev/null 2>&1; }
mmcv_install() {  # builds mmcv 2.1.0 with the build settings of the caller's environment; $@: pip options
    local again=()
    "${pip[@]}" show mmcv >/dev/null 2>&1 && again=(--force-reinstall --no-deps)  # replace what is there
    "${pip[@]}" install --no-build-isolation ${again[@]+"${again[@]}"} "$@" -r "$repo/requirements/mmcv.txt" >&2
}
if ! mmcv_cuda_settled; then
    if command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
        log "mmcv 2.1.0 with CUDA ops (MMVITATTN_MMCV_CUDA=1; known to fail with torch >= 2.9 / CUDA 13)"
        # No wheel cache: the cached wheel is the CPU build, and a CUDA wheel must not replace it there.
        if MMCV_WITH_OPS=1 FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-2}" mmcv_install --no-cache-dir \
                && mmcv_works && mmcv_has_cuda; then
            log "mmcv CUDA ops built"
        else
            touch "$mmcv_cuda_failed"
            log "mmcv's CUDA build failed; using CPU ops and mmvitattn's CUDA ops (rm $mmcv_cuda_failed to retry)"
        fi
    else
        touch "$mmcv_cuda_failed"
        log "MMVITATTN_MMCV_CUDA=1 but no nvcc (PATH or \$CUDA_HOME/bin): mmcv keeps CPU ops" \
            "(rm $mmcv_cuda_failed to retry)"
    fi
fi
if ! mmcv_works; then
    log "mmcv 2.1.0 with CPU ops (compiled once, ~13 min on 2 cores; cached by pip afterwards)"
    # mmcv's setup.py compiles CUDA ops (nvcc) whenever torch sees a GPU: hide it from this command.
    CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" mmcv_install
fi

log "OpenMMLab packages, timm, the test tools"
# The test tools are small; installing them always keeps one environment for demo and tests.
"${pip[@]}" install --quiet -r "$repo/requirements/runtime.txt" -r "$repo/requirements/tests.txt" >&2
"${pip[@]}" install --quiet --no-deps --no-build-isolation -e "$repo" >&2

"$py" -c "import torch, torchvision, mmcv.ops, mmdet, mmseg, timm, mmvitattn" >&2
echo "$stamp" > "$stamp_file"
log "environment ready: $venv"
echo "$py"
