"""Training schedule of Castling-ViT's auxiliary masked softmax branch.

The paper trains with an auxiliary masked softmax attention whose masks are "regularized to
gradually become zeros", so that inference runs the linear-angular attention alone; it gives no
schedule or loss. This project's choice, implemented by :class:`CastlingAuxScheduleHook`:

- **Coefficient.** The branch's output S v is multiplied by ``aux_coef``. It is ``start_coef``
  up to iteration ``begin``, falls to 0 over [``begin``, ``end``] (``'linear'`` or ``'cosine'``),
  and is exactly 0 from ``end`` on. At 0 the branch is skipped entirely (no N x N weights are
  built), so the end of training already runs, and is checked on, the inference model.
- **Threshold (optional).** tau of the mask rises linearly from ``threshold[0]`` to
  ``threshold[1]`` over the same span, so the masks get sparser while the branch fades out. With
  the default ``aux_threshold_mode='relative'`` the mask keeps A_ij > tau / N_real (N_real: the
  image's real keys), so the mask density stays below 1 / tau in every stage whatever its size:
  ``threshold=(1, 4)`` lowers that bound from 1 to 0.25. For ``'absolute'`` modules (the release's
  A_ij > tau) both values must lie in [0, 1).
- **L1 penalty (optional).** ``l1_weight`` > 0 adds ``l1_weight * mean_rows ||S_i||_1`` as a
  gradient on S inside the attention (see :mod:`mmvitattn.attention.castling`); the detector's
  loss dict is untouched. The penalty is active whenever the branch is (coefficient > 0). With
  a relative tau > 1 (1.5 or more in practice) its minimum is an empty mask (rows flattened
  towards 1/N_real), so it lowers the density on top of the threshold.

The hook keeps no state of its own: everything is a function of ``runner.iter`` (and of
``runner.max_iters`` for fractional ``begin``/``end``), so a run resumed from a checkpoint
mid-schedule continues with exactly the coefficient the schedule prescribes.
"""
import math
from collections import OrderedDict
from numbers import Real
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..attention.castling import CastlingAttention, check_aux_threshold
from ..registry import HOOKS

Boundary = Union[int, float]


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_boundary(name: str, value) -> Boundary:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be an int iteration >= 0 or a float fraction in [0, 1] of the '
                         f'training iterations, got {value!r}')
    if isinstance(value, int) and value < 0:
        raise ValueError(f'{name} must be an iteration >= 0, got {value!r}')
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f'{name} as a float is a fraction of the training iterations and must lie in '
                         f'[0, 1], got {value!r} (give an int for an iteration number)')
    return value


def stage_name(module_name: str) -> str:
    """The stage an attention module belongs to, from its name in the model:
    ``backbone.block3.0.attn`` -> ``'block3'`` (PVT), ``backbone.blocks.5.attn`` -> ``'blocks'``
    (ViT), ``backbone.layers.2.blocks.0.attn`` -> ``'layers.2'`` (Swin).

    The last numeric component is the block index; the stage is what precedes the block list
    (or the block list itself when nothing precedes it)."""
    parts = module_name.split('.')
    if parts and parts[0] == 'backbone':
        parts = parts[1:]
    digits = [i for i, p in enumerate(parts) if p.isdigit()]
    if not digits:
        return '.'.join(parts[:-1]) or parts[-1] or 'model'
    prefix = parts[:digits[-1]]
    if len(prefix) > 1:
        prefix = prefix[:-1]
    return '.'.join(prefix) or 'blocks'


def set_castling_aux(modules, coef: float, threshold: Optional[float] = None,
                     l1_weight: Optional[float] = None) -> int:
    """Set the auxiliary branch's coefficient (and optionally threshold and L1 weight) on
    ``modules``: a model (every CastlingAttention with the branch on) or CastlingAttention
    modules. What the hook does every iteration; call it from any other training loop (e.g. timm's,
    per epoch). Returns how many modules were set."""
    if isinstance(modules, nn.Module):
        modules = CastlingAuxScheduleHook.find_modules(modules).values()
    modules = list(modules)
    for m in modules:  # check every module before changing any
        if threshold is not None:
            check_aux_threshold(threshold, m.aux_threshold_mode)
    count = 0
    for m in modules:
        m.aux_coef = coef
        if threshold is not None:
            m.aux_threshold = threshold
        if l1_weight is not None:
            m.aux_l1_weight = l1_weight
        m.last_mask_density = None
        m.last_aux_l1 = None
        count += 1
    return count


@HOOKS.register_module()
class CastlingAuxScheduleHook(Hook):
    """Anneal the auxiliary masked softmax branch of every ``CastlingAttention(aux_softmax=True)``.

    Args:
        begin, end: the span over which the coefficient falls from ``start_coef`` to 0; an int is
            an iteration, a float in [0, 1] a fraction of the run's total training iterations
            (``runner.max_iters``; fractional boundaries are not rounded). Iterations are counted
            from 0 as ``runner.iter`` before the iteration runs (the logs' 1-based ``iter: n`` is
            iteration n - 1 here).
        schedule: ``'linear'``: ``start_coef * (1 - p)``; ``'cosine'``:
            ``start_coef * (1 + cos(pi p)) / 2``, with p = (iter - begin) / (end - begin). Before
            ``begin`` the coefficient is ``start_coef``, from ``end`` on exactly 0.
        start_coef: the coefficient at the start (>= 0).
        threshold: None (keep each module's ``aux_threshold``), one tau for the whole run, or
            ``(tau_start, tau_end)`` raised linearly over [begin, end]; each >= 0, in units of
            1/N_real for ``aux_threshold_mode='relative'`` modules (the default), in [0, 1) for
            ``'absolute'`` ones (checked against the model in ``before_train``).
        l1_weight: weight of the L1 penalty on the masked weights (>= 0; 0 = none), set as
            ``aux_l1_weight`` on every module.

    After every training iteration the coefficient (``train/castling_coef``), the threshold
    (``train/castling_threshold``, when scheduled), the summed L1 penalty (``train/castling_l1``,
    when ``l1_weight`` > 0) and the mean mask density of each stage
    (``train/castling_density_<stage>``, 0 when the branch did not run) go to the message hub,
    so they appear in the text and json logs.
    """
    priority = 'NORMAL'  # after_train_iter runs before the LoggerHook (BELOW_NORMAL)

    def __init__(self, begin: Boundary = 0, end: Boundary = 0.5, schedule: str = 'cosine',
                 start_coef: float = 1.0, threshold: Union[None, float, Sequence[float]] = None,
                 l1_weight: float = 0.0):
        self.begin = _check_boundary('begin', begin)
        self.end = _check_boundary('end', end)
        if type(begin) is type(end) and begin > end:
            raise ValueError(f'begin={begin!r} lies after end={end!r}')
        if schedule not in ('linear', 'cosine'):
            raise ValueError(f"unknown schedule {schedule!r}; expected 'linear' or 'cosine'")
        self.schedule = schedule
        if not _is_number(start_coef) or start_coef < 0:
            raise ValueError(f'start_coef must be a finite number >= 0, got {start_coef!r}')
        self.start_coef = float(start_coef)
        self.threshold = self._check_threshold(threshold)
        if not _is_number(l1_weight) or l1_weight < 0:
            raise ValueError(f'l1_weight must be a finite number >= 0, got {l1_weight!r}')
        self.l1_weight = float(l1_weight)
        self._modules: Dict[str, CastlingAttention] = OrderedDict()
        self._max_iters: Optional[int] = None

    @staticmethod
    def _check_threshold(threshold) -> Optional[Tuple[float, float]]:
        if threshold is None:
            return None
        values = (threshold, threshold) if _is_number(threshold) else threshold
        if (not isinstance(values, (tuple, list)) or len(values) != 2
                or not all(_is_number(t) and t >= 0 for t in values)):
            raise ValueError('threshold must be None, a finite number >= 0 or a pair (start, end) of '
                             f'such numbers, got {threshold!r}')
        return float(values[0]), float(values[1])

    # --- the schedule, a pure function of the iteration -----------------------------------

    def span(self, max_iters: Optional[int] = None) -> Tuple[float, float]:
        """(begin, end) in iterations; ``max_iters`` is needed when either is a fraction."""
        bounds = []
        for name, value in (('begin', self.begin), ('end', self.end)):
            if isinstance(value, float):
                if max_iters is None:
                    raise ValueError(f'{name}={value!r} is a fraction of the training iterations; '
                                     'max_iters is needed to resolve it')
                value = value * max_iters
            bounds.append(float(value))
        begin, end = bounds
        if begin > end:
            raise ValueError(f'begin={self.begin!r} (iteration {begin:g}) lies after end={self.end!r} '
                             f'(iteration {end:g}) for max_iters={max_iters}')
        return begin, end

    def progress(self, iteration: int, max_iters: Optional[int] = None) -> float:
        """p in [0, 1]: 0 up to ``begin``, 1 from ``end`` on."""
        begin, end = self.span(max_iters)
        if iteration <= begin:
            return 0.0 if iteration < end else 1.0  # begin == end: a step at ``end``
        if iteration >= end:
            return 1.0
        return (iteration - begin) / (end - begin)

    def coef_at(self, iteration: int, max_iters: Optional[int] = None) -> float:
        p = self.progress(iteration, max_iters)
        if p >= 1.0:
            return 0.0
        if self.schedule == 'linear':
            return self.start_coef * (1.0 - p)
        return self.start_coef * 0.5 * (1.0 + math.cos(math.pi * p))

    def threshold_at(self, iteration: int, max_iters: Optional[int] = None) -> Optional[float]:
        if self.threshold is None:
            return None
        first, last = self.threshold
        return first + (last - first) * self.progress(iteration, max_iters)

    # --- runner interface ----------------------------------------------------------------------

    @staticmethod
    def find_modules(model) -> Dict[str, CastlingAttention]:
        """Every ``CastlingAttention`` with the branch switched on, by name (wrappers unwrapped)."""
        while is_model_wrapper(model) and hasattr(model, 'module'):  # DDP, mmengine's wrappers
            model = model.module
        return OrderedDict((name, m) for name, m in model.named_modules()
                           if isinstance(m, CastlingAttention) and m.aux_softmax)

    def before_train(self, runner) -> None:
        self._modules = self.find_modules(runner.model)
        if not self._modules:
            raise ValueError(
                'CastlingAuxScheduleHook: the model has no CastlingAttention with aux_softmax=True; '
                'switch the branch on (e.g. backbone attn_cfgs=[..., dict(aux_softmax=True)]) or '
                'remove the hook from custom_hooks')
        self._max_iters = runner.max_iters
        self.span(self._max_iters)  # fail now on an inconsistent begin/end
        if self.threshold is not None:  # fail now on a tau that does not suit a module's mode
            for name, m in self._modules.items():
                for tau in self.threshold:
                    try:
                        check_aux_threshold(tau, m.aux_threshold_mode)
                    except ValueError as err:
                        raise ValueError(f'CastlingAuxScheduleHook threshold={self.threshold!r} for {name}: '
                                         f'{err}') from None
        self.apply(runner.iter)

    def apply(self, iteration: int) -> float:
        """Set coefficient, threshold and L1 weight for ``iteration`` on every module."""
        coef = self.coef_at(iteration, self._max_iters)
        set_castling_aux(self._modules.values(), coef, self.threshold_at(iteration, self._max_iters),
                         self.l1_weight)
        return coef

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.apply(runner.iter)

    def stage_densities(self) -> Dict[str, float]:
        """Mean mask density of the last iteration per stage (0 where the branch did not run)."""
        groups: Dict[str, List[float]] = OrderedDict()
        for name, m in self._modules.items():
            density = m.last_mask_density
            groups.setdefault(stage_name(name), []).append(0.0 if density is None else density)
        return OrderedDict((stage, sum(v) / len(v)) for stage, v in groups.items())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        hub = runner.message_hub
        hub.update_scalar('train/castling_coef', self.coef_at(runner.iter, self._max_iters))
        tau = self.threshold_at(runner.iter, self._max_iters)
        if tau is not None:
            hub.update_scalar('train/castling_threshold', tau)
        if self.l1_weight > 0:
            hub.update_scalar('train/castling_l1', sum(m.last_aux_l1 or 0.0 for m in self._modules.values()))
        for stage, density in self.stage_densities().items():
            hub.update_scalar(f'train/castling_density_{stage}', density)
