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
import collections
import os
import pickle
import re
from typing import Any, List, Optional

import torch

UNSAFE_ENV = 'MMVITATTN_ALLOW_UNSAFE_PICKLE'


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file would unpickle objects outside the allow-list; nothing from it was used."""


def allowed_globals() -> List[Any]:
    """Classes and functions a checkpoint may reference: mmengine's log buffer and numpy values."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                                  np.int8, np.uint8, np.bool_)]
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes,
            (history_buffer_getattr, 'builtins.getattr'), (InertConfig, 'yacs.config.CfgNode')]


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
    """Load a checkpoint file without running pickled code (unless explicitly allowed)."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if unsafe_allowed(allow_unsafe):
            return torch.load(path, map_location=map_location, weights_only=False)
        wanted = re.findall(r'GLOBAL ([\w.]+)', str(err)) or ['an object outside the allow-list']
        raise UnsafeCheckpointError(
            f'refused to load {path}: its pickle references {", ".join(sorted(set(wanted)))}, which '
            f'is not tensor data and could run code. Nothing was executed. If you trust the file, '
            f'pass allow_unsafe=True or set {UNSAFE_ENV}=1.') from None


def register_with_mmengine() -> None:
    """Make mmengine's loader for local files (resume, ``load_from``, ``Pretrained`` init) safe."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)
