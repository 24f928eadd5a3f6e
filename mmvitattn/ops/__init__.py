"""Stand-ins for the compiled mmcv ops our configs reach, for devices where mmcv has no kernel.

mmcv 2.1.0 is installed with CPU ops only (its CUDA build needs a matching toolkit and fails on
current torch / CUDA). Its Python ops (``RoIAlign``, ``nms``, ``batched_nms``,
``sigmoid_focal_loss``, ...) all call functions of one extension module, ``mmcv._ext``, looked up
at call time; mmdet binds those Python ops at import (``from mmcv.ops import batched_nms``), so the
extension functions are the one place where a replacement reaches every caller.

:func:`install_fallbacks` (run by ``import mmvitattn``) wraps each function in
:data:`FALLBACK_OPS` so that tensors on a routed device go to our implementation (torchvision's
kernels and plain torch, :mod:`.roi_align`, :mod:`.nms`, :mod:`.focal_loss`) and all others to
mmcv's kernel. A device is routed only when mmcv has no kernel for it: CUDA when a GPU is visible
and mmcv was compiled without CUDA. Nothing is replaced otherwise, so a working mmcv kernel
(CPU, or CUDA in a CUDA build of mmcv) is never shadowed. ``MMVITATTN_FORCE_OP_FALLBACK=1`` routes
every device, so the replacement can be compared with mmcv's CPU kernels.
"""
import contextlib
import os
import types
from collections import Counter
from typing import Dict, FrozenSet, Iterator

from . import focal_loss, nms, roi_align

FORCE_ENV = 'MMVITATTN_FORCE_OP_FALLBACK'
ALL_DEVICES = 'all'

# mmcv._ext function -> our implementation with the same arguments and in-place outputs.
FALLBACK_OPS = {
    'roi_align_forward': roi_align.roi_align_forward,
    'roi_align_backward': roi_align.roi_align_backward,
    'nms': nms.nms,
    'sigmoid_focal_loss_forward': focal_loss.sigmoid_focal_loss_forward,
    'sigmoid_focal_loss_backward': focal_loss.sigmoid_focal_loss_backward,
}

# mmcv._ext functions that take no tensors (build information): they run on any machine.
DEVICE_FREE_EXT = frozenset({'get_compiler_version', 'get_compiling_cuda_version'})

_originals: Dict[str, object] = {}
_routed: FrozenSet[str] = frozenset()


def _ext():
    import mmcv._ext
    return mmcv._ext


def force_requested() -> bool:
    value = os.environ.get(FORCE_ENV, '').strip()
    if value not in ('', '0', '1'):
        raise ValueError(f'{FORCE_ENV} must be 1 (use the fallback ops on every device) or 0/unset, got {value!r}')
    return value == '1'


def mmcv_has_cuda_ops() -> bool:
    """Whether mmcv's extension was compiled with CUDA kernels."""
    return _ext().get_compiling_cuda_version() != 'not available'


def devices_without_mmcv_kernels() -> FrozenSet[str]:
    import torch
    if torch.cuda.is_available() and not mmcv_has_cuda_ops():
        return frozenset({'cuda'})
    return frozenset()


def routed_devices() -> FrozenSet[str]:
    """Device types whose tensors currently go to the fallback ops ({'all'} when forced)."""
    return _routed


def _route(name: str, mmcv_kernel, fallback, devices: FrozenSet[str]):
    every_device = ALL_DEVICES in devices

    def routed(*args, **kwargs):
        tensor = args[0] if args else next(iter(kwargs.values()))
        if every_device or tensor.device.type in devices:
            return fallback(*args, **kwargs)
        return mmcv_kernel(*args, **kwargs)

    routed.__name__ = name
    routed.__qualname__ = f'fallback_route.{name}'
    routed.__wrapped__ = mmcv_kernel
    return routed


def install_fallbacks(force=None) -> FrozenSet[str]:
    """Route the ops of devices without an mmcv kernel (every device when ``force`` or
    ``MMVITATTN_FORCE_OP_FALLBACK=1``) to the fallbacks; returns the routed device types.
    Calling it again re-decides from scratch (the previous routing is removed first)."""
    global _routed
    uninstall_fallbacks()
    try:
        ext = _ext()
    except ImportError:  # mmcv without compiled ops: mmdet / mmseg cannot run either, nothing to patch
        return _routed
    force = force_requested() if force is None else force
    devices = frozenset({ALL_DEVICES}) if force else devices_without_mmcv_kernels()
    if not devices:
        return _routed
    for name, fallback in FALLBACK_OPS.items():
        _originals[name] = getattr(ext, name)
        setattr(ext, name, _route(name, _originals[name], fallback, devices))
    _routed = devices
    return _routed


def uninstall_fallbacks() -> None:
    """Give mmcv's own extension functions back."""
    global _routed
    if _originals:
        ext = _ext()
        for name, kernel in _originals.items():
            setattr(ext, name, kernel)
        _originals.clear()
    _routed = frozenset()


@contextlib.contextmanager
def forced_fallbacks() -> Iterator[None]:
    """Every device on the fallbacks inside the block; the previous routing afterwards."""
    before = _routed
    install_fallbacks(force=True)
    try:
        yield
    finally:
        uninstall_fallbacks()
        if before:
            install_fallbacks(force=ALL_DEVICES in before)


@contextlib.contextmanager
def record_ext_calls() -> Iterator[Counter]:
    """Count the calls of every ``mmcv._ext`` function made inside the block (by name)."""
    ext = _ext()
    calls: Counter = Counter()
    saved = {name: fn for name, fn in vars(ext).items()
             if isinstance(fn, (types.BuiltinFunctionType, types.FunctionType)) and not name.startswith('_')}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name, fn in saved.items():
        setattr(ext, name, counting(name, fn))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(ext, name, fn)


__all__ = ['FALLBACK_OPS', 'DEVICE_FREE_EXT', 'FORCE_ENV', 'install_fallbacks', 'uninstall_fallbacks', 'routed_devices',
           'forced_fallbacks', 'record_ext_calls', 'mmcv_has_cuda_ops']
