"""A NaN or Inf loss stops training before the optimizer applies it (or the step is skipped).

mmengine's ``train_step`` computes the losses, sums them (``parse_losses``) and hands the sum to
``optim_wrapper.update_params``, which runs backward and the optimizer step. The guard checks
every loss term in between: when one is not finite (on any rank: the flag is all-reduced, so all
ranks take the same decision and none waits in a gradient all-reduce the others skip), training
stops with :class:`NonFiniteLossError` before backward, so the weights, the optimizer state and
every checkpoint stay those of the last good step; or, with ``action='skip'``, that step's update
is left out and training goes on.
"""
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.model import is_model_wrapper

ACTIONS = ('stop', 'skip')


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or Inf; nothing from that step was applied or saved."""


def _bad_terms(log_vars: Dict[str, torch.Tensor]) -> Dict[str, float]:
    return {k: float(v.detach().float().mean()) for k, v in log_vars.items()
            if 'loss' in k and isinstance(v, torch.Tensor) and not bool(torch.isfinite(v.detach()).all())}


def _all_finite(log_vars: Dict[str, torch.Tensor]) -> bool:
    """One flag for every rank: True only if every rank's loss terms are finite."""
    values = [v.detach().float().reshape(-1) for k, v in log_vars.items() if 'loss' in k and isinstance(v, torch.Tensor)]
    finite = torch.isfinite(torch.cat(values)).all() if values else torch.tensor(True)
    if get_world_size() > 1:
        flag = finite.to(torch.int32).reshape(1)
        all_reduce(flag, op='min')
        return bool(flag.item())
    return bool(finite)


class NonFiniteLossGuard:
    """Wraps the model's ``parse_losses`` and the optimizer wrapper's ``update_params``."""

    def __init__(self, action: str = 'stop', max_consecutive_skips: int = 10):
        if action not in ACTIONS:
            raise ValueError(f'nonfinite_loss must be one of {ACTIONS}, got {action!r}')
        if max_consecutive_skips < 1:
            raise ValueError(f'max_consecutive_skips must be >= 1, got {max_consecutive_skips}')
        self.action = action
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_updates = 0
        self._consecutive = 0
        self._skip_next_update = False
        self._attached = None

    def attach(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optim_wrapper = runner.optim_wrapper
        parse_losses, update_params = model.parse_losses, optim_wrapper.update_params

        def checked_parse_losses(losses):
            loss, log_vars = parse_losses(losses)
            self._check(runner, model, log_vars)
            return loss, log_vars

        def checked_update_params(loss, *args, **kwargs):
            if self._skip_next_update:
                self._skip_next_update = False
                optim_wrapper.zero_grad()
                return None
            return update_params(loss, *args, **kwargs)

        model.parse_losses = checked_parse_losses
        optim_wrapper.update_params = checked_update_params
        self._attached = (model, optim_wrapper)

    def detach(self) -> None:
        if self._attached is not None:
            model, optim_wrapper = self._attached
            model.__dict__.pop('parse_losses', None)
            optim_wrapper.__dict__.pop('update_params', None)
            self._attached = None

    def _check(self, runner, model, log_vars) -> None:
        if _all_finite(log_vars):
            self._consecutive = 0
            return
        iteration = runner.iter + 1  # as logged and as the checkpoint of this step would be named
        bad = _bad_terms(log_vars)
        terms = ', '.join(f'{k}={v}' for k, v in bad.items()) if bad else 'on another rank'
        if self.action == 'skip':
            self._consecutive += 1
            problem = self._skip_problem(model)
            if problem is None:
                self.skipped_updates += 1
                self._skip_next_update = True
                runner.logger.warning(f'iteration {iteration}: non-finite loss ({terms}); this update is '
                                      f'skipped ({self.skipped_updates} so far)')
                return
            terms += f'; {problem}'
        raise NonFiniteLossError(
            f'iteration {iteration}: non-finite loss terms {terms}. Training stopped before this step '
            f'was applied; nothing from it is saved. Last good checkpoint: {last_checkpoint(runner)}. '
            "To skip such updates instead, set nonfinite_loss='skip' in mmvitattn.FaultToleranceHook.")

    def _skip_problem(self, model) -> Optional[str]:
        """Why skipping cannot help: too many in a row, or the forward pass already wrote NaNs
        into buffers (e.g. BatchNorm statistics) that skipping the optimizer step cannot undo."""
        if self._consecutive > self.max_consecutive_skips:
            return f'{self._consecutive} consecutive steps were non-finite (max_consecutive_skips=' \
                   f'{self.max_consecutive_skips})'
        for name, buf in model.named_buffers():
            if buf.is_floating_point() and not bool(torch.isfinite(buf).all()):
                return f'the forward pass left non-finite values in buffer {name}'
        return None


def last_checkpoint(runner) -> str:
    """The checkpoint mmengine's CheckpointHook saved last (restored with the message hub on resume)."""
    path = runner.message_hub.get_info('last_ckpt')
    return str(path) if path else 'none saved yet'
