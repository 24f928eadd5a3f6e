"""Checkpoint files that are whole or absent, and the newest one that can be resumed from.

mmengine 0.10.7 writes a checkpoint straight to its final name, so a job killed during the save
leaves a truncated ``iter_N.pth`` that ``--resume`` then picks up. Here every local checkpoint is
written to a hidden temporary file in the same folder, flushed and fsynced, and renamed over the
final name (a rename within one file system is atomic); mmengine's ``CheckpointHook`` writes the
``last_checkpoint`` pointer only after the save returns, i.e. after the rename. A crash leaves at
most a stale temporary file, which :func:`remove_stale_temporaries` clears on the next resume.
"""
import os
import os.path as osp
import re
import uuid
from typing import Callable, List, Optional, Tuple

import torch

TMP_SUFFIX = '.tmp'
POINTER_NAME = 'last_checkpoint'  # mmengine's name for the file holding the latest checkpoint path
# Names of the periodic checkpoints mmengine's CheckpointHook writes (its default templates).
PERIODIC_CHECKPOINT = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
STALE_TEMPORARY = re.compile(r'^\..+\.[0-9a-f]{32}' + re.escape(TMP_SUFFIX) + '$')
_MMENGINE_SAVE: List[Callable] = []  # mmengine's original writer, kept for the remote back ends


def write_atomically(path: str, write: Callable) -> None:
    """``write(binary_file)``, into a temporary file renamed to ``path`` once complete and on disk."""
    path = osp.abspath(osp.expanduser(path))
    folder, name = osp.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{name}.{uuid.uuid4().hex}{TMP_SUFFIX}')
    try:
        with open(tmp, 'xb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint_atomically(checkpoint, filename, file_client_args=None, backend_args=None) -> None:
    """Drop-in for ``mmengine.runner.save_checkpoint``: local files atomically; other back ends
    (``s3://``, ``pavi://``, explicit backend arguments) through mmengine's own writer."""
    if file_client_args is not None or backend_args is not None or '://' in str(filename):
        return _MMENGINE_SAVE[0](checkpoint, filename, file_client_args=file_client_args,
                                 backend_args=backend_args)
    write_atomically(str(filename), lambda f: torch.save(checkpoint, f))


def register_atomic_save() -> None:
    """Route mmengine's checkpoint writes (Runner.save_checkpoint, CheckpointHook's published
    models, direct ``mmengine.runner.save_checkpoint`` calls) through :func:`save_checkpoint_atomically`."""
    import mmengine.runner
    import mmengine.runner.checkpoint
    import mmengine.runner.runner

    if not _MMENGINE_SAVE:
        _MMENGINE_SAVE.append(mmengine.runner.checkpoint.save_checkpoint)
    for module in (mmengine.runner, mmengine.runner.checkpoint, mmengine.runner.runner):
        module.save_checkpoint = save_checkpoint_atomically


def write_pointer(work_dir: str, checkpoint_path: str) -> None:
    """Point mmengine's ``last_checkpoint`` file at ``checkpoint_path`` (atomically)."""
    write_atomically(osp.join(work_dir, POINTER_NAME), lambda f: f.write(str(checkpoint_path).encode()))


def remove_stale_temporaries(folders) -> List[str]:
    """Delete temporary files a crash left behind in ``folders``; returns their paths."""
    removed = []
    for folder in dict.fromkeys(folders):
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            if STALE_TEMPORARY.match(name):
                os.remove(osp.join(folder, name))
                removed.append(osp.join(folder, name))
    return removed


def latest_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The checkpoint ``--resume`` should continue from, and the unreadable ones passed over.

    The file ``last_checkpoint`` names comes first; when it is missing, empty, truncated or not a
    training checkpoint, the periodic checkpoints next to it and in ``work_dir`` are tried, newest
    first. Each candidate is read with the safe loader. Returns ``(path or None, [(path, why)])``.
    """
    from .safe_load import load_checkpoint_file

    pointed = None
    pointer = osp.join(work_dir, POINTER_NAME)
    if osp.isfile(pointer):
        with open(pointer, errors='replace') as f:
            pointed = f.read().strip() or None
    folders = [work_dir] + ([osp.dirname(pointed)] if pointed else [])
    periodic = []
    for folder in dict.fromkeys(folders):
        if osp.isdir(folder):
            periodic += [osp.join(folder, n) for n in os.listdir(folder) if PERIODIC_CHECKPOINT.match(n)]
    periodic.sort(key=lambda p: (osp.getmtime(p), int(PERIODIC_CHECKPOINT.match(osp.basename(p)).group(1))),
                  reverse=True)
    candidates = list(dict.fromkeys(([pointed] if pointed else []) + periodic))

    skipped = []
    if osp.isfile(pointer) and not pointed:
        skipped.append((pointer, 'the pointer file is empty'))
    for path in candidates:
        try:
            checkpoint = load_checkpoint_file(path, map_location='cpu')
        except Exception as err:  # missing, truncated, foreign or refused: try the previous one
            skipped.append((path, str(err)))
            continue
        if not isinstance(checkpoint, dict) or not {'meta', 'state_dict'} <= set(checkpoint):
            skipped.append((path, 'not a training checkpoint (no meta / state_dict)'))
            continue
        return path, skipped
    return None, skipped
