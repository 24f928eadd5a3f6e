"""One hook for the faults of long training jobs (on in every config through the runtime base).

- Preemption: SIGTERM / SIGUSR1 -> a checkpoint of the current iteration at the next step
  boundary (all ranks agree), then exit code 75 (:data:`PREEMPTED_EXIT_CODE`); ``--resume``
  continues exactly (with ``RNGStateHook``).
- Crashes: checkpoints are written atomically (``mmvitattn.checkpoint.atomic``, installed on
  import); auto-resume (``--resume`` without a file) skips an unreadable latest checkpoint,
  naming it, and continues from the newest readable one.
- Dead ranks: a watchdog names a rank that died; the others exit (code 76) instead of hanging.
- Bad samples: ``bad_samples='raise'`` (one error naming the file and index) or ``'skip'``
  (skipped, counted, reported at the end of the epoch).
- NaN / Inf losses: ``nonfinite_loss='stop'`` (before the step is applied; names the iteration,
  the terms and the last good checkpoint) or ``'skip'`` (that update is left out).
"""
import signal
import sys
from typing import Sequence

import torch
from mmengine.dist import all_reduce, barrier, broadcast_object_list, get_dist_info, is_main_process
from mmengine.hooks import Hook

from ..checkpoint.atomic import latest_resumable_checkpoint, remove_stale_temporaries
from ..datasets.guard import base_datasets, guard_samples, sample_files
from ..registry import HOOKS
from .nonfinite import NonFiniteLossGuard
from .preemption import PREEMPTED_EXIT_CODE, Preempted, PreemptionSignals, save_preemption_checkpoint
from .watchdog import PEER_LOST_EXIT_CODE, PeerWatchdog

BAD_SAMPLE_ACTIONS = ('raise', 'skip')
REPORTED_SAMPLES = 16  # skipped samples named in the end-of-epoch report (the count is complete)

__all__ = ['FaultToleranceHook', 'PEER_LOST_EXIT_CODE', 'PREEMPTED_EXIT_CODE']


@HOOKS.register_module()
class FaultToleranceHook(Hook):
    """Preemption, crash-safe resume, dead ranks, bad samples and non-finite losses.

    Args:
        signals: signal names that ask for a checkpoint and an exit at the next step boundary.
        bad_samples: 'raise' or 'skip' a training sample whose loading fails.
        nonfinite_loss: 'stop' or 'skip' the update when a loss term is NaN or Inf.
        max_consecutive_skips: with 'skip', stop anyway after this many non-finite steps in a row.
        peer_timeout: seconds without a heartbeat after which a silent rank is named once this
            rank's own step failed (distributed); a silent rank ends the job only after the
            process-group timeout (``env_cfg.dist_cfg.timeout``).
    """
    priority = 'LOWEST'  # after_train_iter: after the step's logging, scheduler and checkpoint hooks

    def __init__(self, signals: Sequence[str] = ('SIGTERM', 'SIGUSR1'), bad_samples: str = 'raise',
                 nonfinite_loss: str = 'stop', max_consecutive_skips: int = 10, peer_timeout: float = 20.0):
        if bad_samples not in BAD_SAMPLE_ACTIONS:
            raise ValueError(f'bad_samples must be one of {BAD_SAMPLE_ACTIONS}, got {bad_samples!r}')
        if not peer_timeout > 0:
            raise ValueError(f'peer_timeout must be a positive number of seconds, got {peer_timeout!r}')
        self.bad_samples = bad_samples
        self.peer_timeout = float(peer_timeout)
        self.loss_guard = NonFiniteLossGuard(nonfinite_loss, max_consecutive_skips)
        # Both now, while the Runner is being built: its data loader workers fork later and inherit them.
        self.preemption = PreemptionSignals(signals)
        self.skipped = guard_samples(skip=bad_samples == 'skip')
        self.watchdog = None
        self._previous_excepthook = None

    # -- run: resume choice, watchdog ------------------------------------------------------------
    def before_run(self, runner) -> None:
        rank, world_size = get_dist_info()
        if world_size > 1:
            self._start_watchdog(runner, rank, world_size)
        if runner._resume and runner._load_from is None:  # auto-resume: mmengine reads last_checkpoint
            self._choose_resume_checkpoint(runner)

    def _choose_resume_checkpoint(self, runner) -> None:
        choice = [None]
        if is_main_process():
            for path in remove_stale_temporaries([runner.work_dir]):
                runner.logger.info(f'removed {path}, left by a checkpoint save that did not finish')
            path, skipped = latest_resumable_checkpoint(runner.work_dir)
            for bad, why in skipped:
                runner.logger.warning(f'auto-resume: skipping unreadable checkpoint {bad}: {why}')
            if path is None and skipped:
                raise RuntimeError(f'auto-resume: no readable checkpoint in {runner.work_dir} (skipped: '
                                   f'{", ".join(p for p, _ in skipped)}); remove them to start afresh')
            choice = [path]
        broadcast_object_list(choice)
        if choice[0] is not None:
            runner.logger.info(f'auto-resume: continuing from {choice[0]}')
            runner._load_from = choice[0]

    def _start_watchdog(self, runner, rank: int, world_size: int) -> None:
        from torch.distributed import distributed_c10d
        store = distributed_c10d._get_default_store()
        dist_timeout = runner.cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout', 1800)
        self.watchdog = PeerWatchdog(store, rank, world_size, self.peer_timeout, runner.logger,
                                     hang_timeout=dist_timeout)
        self.watchdog.start()
        barrier()  # every rank is registered before anyone watches
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook

    def _excepthook(self, exc_type, exc, tb) -> None:
        self._previous_excepthook(exc_type, exc, tb)
        if self.watchdog is not None:
            self.watchdog.name_lost_peers(exc)

    def after_run(self, runner) -> None:
        self.preemption.restore()
        self.loss_guard.detach()
        if self.watchdog is not None:
            self.watchdog.stop('finished')
            sys.excepthook = self._previous_excepthook

    # -- training: data and loss guards, preemption ---------------------------------------------
    def before_train(self, runner) -> None:
        self.skipped.take()  # count this run's skips only
        self.loss_guard.attach(runner)
        self.preemption.armed = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        signum = self.preemption.agreed()
        if signum is None:
            return
        path = save_preemption_checkpoint(runner)
        runner.logger.warning(
            f'{signal.Signals(signum).name} received: saved the checkpoint of iteration {runner.iter + 1} to '
            f'{path}; exiting with code {PREEMPTED_EXIT_CODE} (continue with --resume)')
        if self.watchdog is not None:
            self.watchdog.stop('preempted')
        raise Preempted(PREEMPTED_EXIT_CODE)

    def after_train_epoch(self, runner) -> None:
        if self.bad_samples != 'skip':
            return
        count, indices = self.skipped.take()
        datasets = list(base_datasets(runner.train_dataloader.dataset))
        # Indices are those of the dataset that failed; files can be named when there is one.
        named = [f'index {i}' + (f' ({sample_files(datasets[0], i)})' if len(datasets) == 1 else '')
                 for i in indices[:REPORTED_SAMPLES]]
        total = torch.tensor([count], dtype=torch.int64)
        all_reduce(total)  # a no-op unless distributed
        if int(total):
            where = f'; on this rank: {"; ".join(named)}' if named else ''
            runner.logger.warning(f'epoch {runner.epoch + 1}: skipped {int(total)} training sample(s) '
                                  f'that could not be loaded{where}')
