"""Preemption: SIGTERM / SIGUSR1 ask for a checkpoint at the next step boundary, then an exit.

Clusters announce preemption with a signal (SLURM: SIGTERM, or SIGUSR1 with ``--signal``;
torchrun forwards SIGTERM to its workers) and kill the job a grace period later. The handler only
records the signal; the training loop acts on it after the current iteration's hooks (logging,
scheduler, periodic checkpoint), where the state is exactly that of a finished step. In a
distributed run the ranks agree through an all-reduce of the flag, so all of them stop after the
same step. The process then exits with :data:`PREEMPTED_EXIT_CODE`.
"""
import os
import signal
import threading
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook
from torch.utils.data import get_worker_info

from ..checkpoint.atomic import write_pointer

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, run again to continue


class Preempted(SystemExit):
    """Raised at a step boundary once the preemption checkpoint is written."""


class PreemptionSignals:
    """Handlers for ``signals`` that record the request while training is armed.

    They are installed when created (the Runner builds hooks before its data loader workers fork,
    so forked workers inherit them and ignore the signal: the main process saves, then shuts them
    down). Outside training (e.g. ``tools/test.py`` with the same config) a signal keeps its
    previous meaning.
    """

    def __init__(self, signals: Sequence[str] = ('SIGTERM', 'SIGUSR1')):
        self.signals = []
        for name in signals:
            if not isinstance(name, str) or not hasattr(signal, name):
                raise ValueError(f'unknown signal {name!r}; expected names such as "SIGTERM", "SIGUSR1"')
            self.signals.append(getattr(signal, name))
        self.armed = False
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if get_worker_info() is not None:
            return  # a data loader worker: the main process decides
        if not self.armed:
            self._forward(signum, frame)
            return
        self.received = signum

    def _forward(self, signum, frame) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def agreed(self) -> Optional[int]:
        """The signal number if any rank received one (collective: every rank must call it)."""
        received = self.received or 0
        if get_world_size() > 1:
            flag = torch.tensor([received], dtype=torch.int64)
            all_reduce(flag, op='max')
            received = int(flag.item())
        return received or None

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        self.armed = False


def save_preemption_checkpoint(runner) -> str:
    """Save the state after the current step (a regular checkpoint of this iteration) and point
    ``last_checkpoint`` at it; returns its path. Collective: all ranks call it, rank 0 writes."""
    step = runner.iter + 1
    hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
    if hook is not None and not hook.by_epoch:
        # The CheckpointHook's own save: same name, pointer, rotation (max_keep_ckpts) and meta.
        name = hook.filename_tmpl.format(step)
        if not (hook.last_ckpt and os.path.basename(hook.last_ckpt) == name):
            hook._save_checkpoint(runner)
        path = hook.last_ckpt
    else:
        # Epoch-based schedule: a mid-epoch checkpoint named by its iteration.
        out_dir = getattr(hook, 'out_dir', None) or runner.work_dir
        path = os.path.join(out_dir, f'iter_{step}.pth')
        runner.save_checkpoint(out_dir, os.path.basename(path), meta=dict(epoch=runner.epoch, iter=step),
                               by_epoch=False)
        if is_main_process():
            write_pointer(runner.work_dir, path)
    barrier()  # no rank leaves before rank 0 has written the file
    return str(path)
