"""Exact resume: the checkpoint carries torch's random state, restored where it was saved.

mmengine saves model, optimizer, schedulers and counters, and on resume re-seeds and replays
the data loader up to the checkpoint's iteration (so the data pipeline's numpy / python draws
and the sampler's order come out as in the original run). What it does not restore is torch's
generator as the *model* left it: dropout, drop path, RPN / RoI sampling (``torch.randperm``)
then draw other numbers after a resume than in an uninterrupted run. This hook stores the torch
CPU (and CUDA) generator states with every checkpoint and puts them back just before the first
training iteration after a resume, i.e. after mmengine's data replay and the next batch's
loading, which use no torch random numbers of the default generator.
"""
from typing import Optional

import torch
from mmengine.hooks import Hook

from ..registry import HOOKS

CHECKPOINT_KEY = 'mmvitattn_rng_state'


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save torch's random generator states in checkpoints; restore them on resume."""
    priority = 'VERY_LOW'  # after the other hooks' before_train_iter, right before the step

    def __init__(self):
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(torch=torch.get_rng_state())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint[CHECKPOINT_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only a resume continues the random stream; load_from (fine-tuning) starts a new one.
        if runner._resume and CHECKPOINT_KEY in checkpoint:
            self._pending = checkpoint[CHECKPOINT_KEY]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            cuda = state['cuda']
            if len(cuda) != torch.cuda.device_count():
                raise RuntimeError(f'the checkpoint holds random states of {len(cuda)} GPUs, this '
                                   f'process sees {torch.cuda.device_count()}: cannot resume exactly')
            torch.cuda.set_rng_state_all(cuda)
