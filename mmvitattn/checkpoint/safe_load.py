"""Reading checkpoint files as data.

torch >= 2.6 loads with ``weights_only=True``: only tensors, containers and an allow-list of
classes may be unpickled. mmengine's own checkpoints also hold a few harmless objects (its log
``HistoryBuffer``, numpy arrays and scalars in the message hub), so plain mmengine 0.10.7 cannot
resume or test its own files any more. This module allows exactly those classes, and only while
one of our loads runs (``torch.serialization.safe_globals``), rather than switching safe loading
off for every file the process reads. A file that needs anything else is refused with an error
that names what it wanted; running arbitrary pickled code is an explicit opt-in
(``allow_unsafe=True`` or the environment variable ``MMVITATTN_ALLOW_UNSAFE_PICKLE=1``).
"""
import argparse
import collections
import os
import pickle
import re
from typing import Any, List, Optional

import torch

UNSAFE_ENV = 'MMVITATTN_ALLOW_UNSAFE_PICKLE'


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file would unpickle objects outside the allow-list; nothing from it was used."""


class CheckpointReadError(ValueError):
    """The file is not a checkpoint that can be read (truncated, empty, another format)."""


def allowed_globals() -> List[Any]:
    """Classes and functions a checkpoint may reference: mmengine's log buffer, numpy values, the
    configs saved by the InLine releases (yacs) and by timm's training script (argparse)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                                  np.int8, np.uint8, np.bool_)]
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes,
            (history_buffer_getattr, 'builtins.getattr'), (InertConfig, 'yacs.config.CfgNode'),
            argparse.Namespace]  # timm's training script saves its arguments


class InertConfig:
    """Stands in for a pickled yacs ``CfgNode`` (the training config inside the official InLine
    checkpoints): it unpickles as a plain ``OrderedDict`` of the config's keys and values (yacs'
    own flags land in that dict's ``__dict__``); no yacs code is imported or run. An OrderedDict,
    because torch's safe unpickler fills and builds only plain containers."""

    def __new__(cls, *args, **kwargs):
        return collections.OrderedDict()


def history_buffer_getattr(obj, name: str):
    """Stands in for ``getattr`` while unpickling. A pickled HistoryBuffer refers to its statistics
    methods as ``getattr(HistoryBuffer, 'mean')``; a general ``getattr`` would reach anything
    (e.g. ``ndarray.tofile``), so only that exact use is allowed."""
    from mmengine.logging import HistoryBuffer

    builtin_statistics = ('min', 'max', 'mean', 'current')  # registered lazily by mmengine
    if obj is HistoryBuffer and (name in builtin_statistics or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'GLOBAL builtins.getattr used on {obj!r}.{name}')


def unsafe_allowed(allow_unsafe: Optional[bool]) -> bool:
    if allow_unsafe is not None:
        return allow_unsafe
    return os.environ.get(UNSAFE_ENV, '') == '1'


def load_checkpoint_file(path: str, map_location='cpu', allow_unsafe: Optional[bool] = None):
    """Load a checkpoint file without running pickled code (unless explicitly allowed).

    Errors name the file: :class:`UnsafeCheckpointError` when its pickle references anything
    outside the allow-list, :class:`CheckpointReadError` when it is truncated or not a checkpoint.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        wanted = re.findall(r'GLOBAL ([\w.]+)', str(err))
        if not unsafe_allowed(allow_unsafe):
            if not wanted:
                raise _read_error(path, err) from None
            raise UnsafeCheckpointError(
                f'refused to load {path}: its pickle references {", ".join(sorted(set(wanted)))}, which '
                f'is not tensor data and could run code. Nothing was executed. If you trust the file, '
                f'pass allow_unsafe=True or set {UNSAFE_ENV}=1.') from None
    except Exception as err:  # torch reports damaged files as OSError, EOFError, RuntimeError, KeyError...
        raise _read_error(path, err) from None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise _read_error(path, err) from None


def _read_error(path: str, err: Exception) -> CheckpointReadError:
    detail = str(err).strip().splitlines()
    detail = next((line for line in detail if 'WeightsUnpickler error' not in line and line.strip()), '')
    if 'Unsupported operand' in str(err):
        detail = re.search(r'Unsupported operand \d+', str(err)).group(0)
    return CheckpointReadError(
        f'could not read checkpoint {path}: the file is truncated, empty or not a PyTorch checkpoint '
        f'({type(err).__name__}{": " + detail[:200] if detail else ""})')


def register_safe_loader() -> None:
    """Make mmengine's loader for local files (resume, ``load_from``, ``Pretrained`` init) safe."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)
