"""One path from a pretrained file to a backbone: read it as data, pick its state dict, convert the
key layout, warm-start Armour projections (:func:`warm_start_armour`), resize position tables,
load, and report what happened.

Every backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)`` and
``tools/convert_checkpoint.py`` use :func:`load_pretrained`. Families plug in through two methods
of :class:`~mmvitattn.backbones.common.BackboneBase`:

- ``convert_pretrained_state(state)``: rename another layout (timm, official) into ours;
- ``resize_pretrained_tensor(key, tensor, shape)``: resize a position embedding / bias table
  trained for another size, or return None when the tensor cannot be resized.

The report sorts every tensor into: *copied* (same name, same values), *converted* (renamed or
re-laid-out), *resized* (interpolated to this model's size), *new* (this model's own
initialisation: nothing in the file for it) and *dropped* (in the file but not used, with why).
"""
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .safe_load import CheckpointReadError, load_checkpoint_file

# Entries a file may wrap its weights in: mmengine ('state_dict'), the official InLine/DeiT/CSwin
# releases ('model'), timm's training script ('state_dict'), DataParallel dumps ('module').
STATE_ENTRIES = ('state_dict', 'model', 'module')
EMA_ENTRIES = ('state_dict_ema', 'model_ema', 'ema_state_dict')
# Buffers the models derive themselves; files of other codebases save them.
DERIVED_BUFFERS = ('relative_position_index', 'attn_mask', 'attention_bias_idxs')
HEAD_PREFIXES = ('head.', 'head_dist.', 'fc.')


def strip_module_prefix(state: Dict) -> Dict:
    """Keys saved from a DataParallel / DistributedDataParallel wrapper lose their ``module.``."""
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def unwrap_state(checkpoint: Dict) -> Dict:
    """The weights of a checkpoint that wraps them in a ``model`` or ``state_dict`` entry (the
    official releases, mmengine), ``module.`` stripped; a bare state dict as it is."""
    state = checkpoint
    for entry in ('model', 'state_dict'):
        if isinstance(state, dict) and isinstance(state.get(entry), dict):
            state = state[entry]
    return strip_module_prefix(state)


def drop_derived_buffers(state: Dict) -> Dict:
    """Without the buffers the models derive themselves (``DERIVED_BUFFERS``)."""
    return {k: v for k, v in state.items() if k.rsplit('.', 1)[-1] not in DERIVED_BUFFERS}


class ConvertedState(dict):
    """A converted state dict that also names, in ``origin``, the file key each tensor it built
    came from (when a converter computes new tensors rather than renaming)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.origin: Dict[str, str] = dict(getattr(args[0], 'origin', {})) if args else {}


@dataclass
class LoadReport:
    """What a pretrained load did with every tensor (see the module docstring)."""
    source: str
    entry: str
    copied: List[str] = field(default_factory=list)
    converted: Dict[str, str] = field(default_factory=dict)  # model key -> where it came from
    resized: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)  # key -> (file, model) shape
    new: List[str] = field(default_factory=list)
    dropped: Dict[str, str] = field(default_factory=dict)  # file key -> reason

    @property
    def loaded(self) -> List[str]:
        return sorted([*self.copied, *self.converted, *self.resized])

    def format(self, max_names: int = 8) -> str:
        """A readable summary; names that differ only in block indices are grouped (``blocks.*``)."""
        lines = [f'pretrained weights from {self.source} (entry {self.entry!r}): '
                 f'{len(self.copied)} copied, {len(self.converted)} converted, {len(self.resized)} '
                 f'resized, {len(self.new)} new, {len(self.dropped)} dropped']
        if self.converted:
            pairs = [f'{k} <- {v}' for k, v in self.converted.items()]
            lines.append('  converted: ' + ', '.join(pairs[:max_names]) + (' ...' if len(pairs) > max_names else ''))
        if self.resized:
            lines.append('  resized: ' + ', '.join(
                f'{k} {tuple(a)} -> {tuple(b)}' for k, (a, b) in list(self.resized.items())[:max_names])
                + (' ...' if len(self.resized) > max_names else ''))
        if self.new:
            lines.append('  new (initialised by the model): ' + _grouped(self.new, max_names))
        by_reason = defaultdict(list)
        for key, reason in self.dropped.items():
            by_reason[reason].append(key)
        for reason, keys in by_reason.items():
            lines.append(f'  dropped ({reason}): ' + _grouped(keys, max_names))
        return '\n'.join(lines)


def _grouped(names: List[str], max_names: int) -> str:
    groups: Dict[str, int] = {}
    for name in names:
        pattern = re.sub(r'(?<=\.)\d+(?=\.)', '*', name)
        groups[pattern] = groups.get(pattern, 0) + 1
    parts = [p if n == 1 else f'{p} (x{n})' for p, n in groups.items()]
    return ', '.join(parts[:max_names]) + (f', ... ({len(parts) - max_names} more)' if len(parts) > max_names else '')


def read_checkpoint(source, allow_unsafe: Optional[bool] = None) -> dict:
    """A file path, URL or already-loaded dict -> the checkpoint dict (files are read as data)."""
    if isinstance(source, dict):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f'checkpoint must be a file path, URL or dict, got {type(source).__name__}')
    source = str(source)
    if re.match(r'^[a-z][a-z0-9+.-]*://', source):
        from mmengine.runner.checkpoint import CheckpointLoader
        return CheckpointLoader.load_checkpoint(source, map_location='cpu')
    path = os.path.expanduser(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'pretrained checkpoint not found: {source} (looked in {os.path.abspath(path)}). Download it '
            f"(README, 'Checkpoints'), point init_cfg.checkpoint at it, or train from scratch with "
            f'--cfg-options model.backbone.init_cfg=None')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            return load_file(path, device='cpu')
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointReadError(f'could not read checkpoint {path}: not a valid safetensors file '
                                      f'({type(err).__name__}: {err})') from None
    return load_checkpoint_file(path, allow_unsafe=allow_unsafe)


def select_state_dict(checkpoint: dict, use_ema: bool = False, source: str = '<dict>',
                      entry: Optional[str] = None):
    """The weights inside a checkpoint dict -> (state dict of tensors, name of the entry used).
    ``entry`` names the wrapping entry to read; by default the first of ``STATE_ENTRIES`` then
    ``EMA_ENTRIES`` (only ``EMA_ENTRIES`` with ``use_ema``) present, else the top level."""
    if not isinstance(checkpoint, dict):
        raise CheckpointReadError(f'checkpoint {source} holds a {type(checkpoint).__name__}, '
                                  'expected a dict of tensors or a dict wrapping one')
    if entry is not None and not isinstance(checkpoint.get(entry), dict):
        raise KeyError(f'checkpoint {source} has no {entry!r} entry; found {sorted(checkpoint)[:10]}')
    # A file holding only EMA weights (e.g. the CSWin releases) is read from its EMA entry.
    entries = (entry, ) if entry else EMA_ENTRIES if use_ema else STATE_ENTRIES + EMA_ENTRIES
    entry = next((e for e in entries if isinstance(checkpoint.get(e), dict)), None)
    if entry is None and use_ema:
        raise KeyError(f'use_ema=True but checkpoint {source} has no EMA weights; expected one of '
                       f'{EMA_ENTRIES}, found entries {sorted(checkpoint)}')
    state = checkpoint[entry] if entry else checkpoint
    tensors = strip_module_prefix({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
    if not tensors:
        raise CheckpointReadError(f'checkpoint {source} has no tensors (entries: {sorted(checkpoint)[:10]})')
    return tensors, entry or '<top level>'


def armour_rows(heads: int, key_dim: int, val_dim: int, parts) -> Tuple[torch.Tensor, int]:
    """Row index into a softmax projection laid out per head as [q | k | v] (``key_dim``,
    ``key_dim``, ``val_dim`` rows) that gives an Armour projection with per-head rows ``parts``:
    ``'shared'`` (W_Q = W_V: the first ``key_dim`` rows of v, so v starts as the softmax model's),
    ``'k'``, ``'v_own'`` (the rest of v). Also returns the softmax projection's row count."""
    spans = {'shared': (2 * key_dim, 3 * key_dim), 'k': (key_dim, 2 * key_dim),
             'v_own': (3 * key_dim, 2 * key_dim + val_dim)}
    per_head = torch.cat([torch.arange(*spans[p]) for p in parts])
    width = 2 * key_dim + val_dim
    return torch.cat([per_head + h * width for h in range(heads)]), heads * width


def _armour_targets(model: nn.Module):
    """(source prefix, target prefix, (row index, softmax rows)) of every Armour projection of ``model``
    that a softmax checkpoint's ``qkv`` warm-starts."""
    from ..attention.armour import ArmourAttention
    from ..attention.levit import LeViTAttention
    for name, module in model.named_modules():
        if isinstance(module, ArmourAttention):
            # Fused [q | k | v] rows (one "head" of width C); Armour's kv holds [k | shared].
            c = module.dim
            yield f'{name}.qkv.', f'{name}.kv.', armour_rows(1, c, c, ('k', 'shared'))
        elif isinstance(module, LeViTAttention) and module.attention != 'softmax':
            parts = ('shared', 'k', 'v_own') if module.attention == 'armour' else ('shared', 'k')
            dst = f'{name}.{"qk" if module.attention == "armour_plus" else "qkv"}.'
            yield f'{name}.qkv.', dst, armour_rows(module.num_heads, module.key_dim, module.val_dim, parts)


def warm_start_armour(state: Dict[str, torch.Tensor], model: nn.Module) -> 'ConvertedState':
    """Warm-start every Armour projection of ``model`` (ViT/DeiT/PVT's ``ArmourAttention`` and
    LeViT's Armour / Armour+ forms) from a softmax state dict (our layout): the shared q/v rows come
    from the value projection, k from k, an own part of v from the rest of v. Every leaf of the
    projection (a linear's weight and bias, a BN-linear's weight and BatchNorm statistics) follows
    its rows. A target already in ``state`` (an Armour checkpoint, PVT's ``kv``) is left as it is.
    Returns a state dict whose ``origin`` names the source of every tensor it builds."""
    out = ConvertedState(state)
    own = model.state_dict()
    for src, dst, (index, rows) in _armour_targets(model):
        leaves = [k[len(dst):] for k in own if k.startswith(dst)]
        first = next((state.get(src + leaf) for leaf in leaves if leaf.endswith('weight')), None)
        present = dst != src and any(dst + leaf in state for leaf in leaves)
        if first is None or first.shape[0] != rows or present:
            continue  # no softmax projection here (already Armour, or absent), or the target is given
        for leaf in leaves:
            value = state.get(src + leaf)
            if value is None:
                continue
            out[dst + leaf] = value if value.dim() == 0 else value.index_select(0, index)
            out.origin[dst + leaf] = src + leaf
        if dst != src:
            for key in [k for k in out if k.startswith(src)]:
                del out[key]
    return out


def _drop_reason(key: str) -> str:
    if key.rsplit('.', 1)[-1] in DERIVED_BUFFERS:
        return 'buffer the model derives itself'
    if key.startswith(HEAD_PREFIXES) or key == 'dist_token':
        return 'classifier/distillation head this model does not have or sizes differently'
    return 'not a parameter of this model'


def load_pretrained(model: nn.Module, checkpoint, prefix: Optional[str] = None, use_ema: bool = False,
                    entry: Optional[str] = None, allow_unsafe: Optional[bool] = None,
                    logger: Optional[str] = 'current') -> LoadReport:
    """Load ``checkpoint`` (path, URL or dict) into ``model`` and return (and log) the report.

    ``prefix`` keeps only keys under it (e.g. ``'backbone.'``); when not given and the file is a
    detector/segmentor trained by us (keys under ``backbone.``), that prefix is used. ``use_ema``
    reads the file's EMA weights (``state_dict_ema``) instead of the trained ones; ``entry`` names
    the file's entry to read (see :func:`select_state_dict`).
    Tensors whose shape differs and that cannot be resized raise an error naming them (a file of
    another model size), before anything is loaded.
    """
    source = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else '<state dict>'
    raw, entry = select_state_dict(read_checkpoint(checkpoint, allow_unsafe), use_ema, str(source), entry)
    own = model.state_dict()
    if prefix is None and not set(raw) & set(own) and any(k.startswith('backbone.') for k in raw):
        prefix = 'backbone.'
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
    file_state = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)} if prefix else raw
    if not file_state:
        raise KeyError(f'checkpoint {source} has no keys under prefix {prefix!r}')

    convert = getattr(model, 'convert_pretrained_state', None)
    state = warm_start_armour(convert(dict(file_state)) if convert else dict(file_state), model)

    report = LoadReport(source=str(source), entry=entry)
    mismatched = []
    for key in list(state):
        if key not in own:
            continue
        tensor, shape = state[key], own[key].shape
        if tensor.shape == shape:
            continue
        resize = getattr(model, 'resize_pretrained_tensor', None)
        resized = resize(key, tensor, shape) if resize else None
        if resized is not None and resized.shape == shape:
            state[key] = resized
            report.resized[key] = (tuple(tensor.shape), tuple(shape))
        elif key.startswith(HEAD_PREFIXES):
            del state[key]
        else:
            mismatched.append(f'{key}: file {tuple(tensor.shape)} vs model {tuple(shape)}')
    if mismatched:
        raise ValueError(f'checkpoint {source} does not fit {type(model).__name__} ({len(mismatched)} '
                         f'tensors differ in shape; is it another model size?): ' + '; '.join(mismatched[:5]))

    # Provenance: converters rename (the same tensor object) or re-lay out (a view of the same
    # storage); a converter that builds new tensors names their sources in ``state.origin``.
    by_id = {id(t): k for k, t in file_state.items()}
    by_storage = {t.untyped_storage().data_ptr(): k for k, t in file_state.items()}
    hints = getattr(state, 'origin', {})
    used = set()
    for key, tensor in state.items():
        if key not in own:
            continue
        origin = hints.get(key) or by_id.get(id(tensor)) or by_storage.get(tensor.untyped_storage().data_ptr())
        if key in report.resized:
            pass
        elif origin is None and key in file_state and file_state[key].shape != tensor.shape:
            origin = key  # a converter resized it (e.g. a position embedding to the model's grid)
            report.resized[key] = (tuple(file_state[key].shape), tuple(tensor.shape))
        elif origin == key and tensor is file_state[key]:
            report.copied.append(key)
        else:
            report.converted[key] = origin or 'derived from several tensors'
        used.add(origin or key)
    for key in raw:
        if prefix and not key.startswith(prefix):
            report.dropped[key] = f'outside prefix {prefix!r}'
            continue
        stripped = key[len(prefix):] if prefix else key
        if stripped not in used:
            report.dropped[stripped] = _drop_reason(stripped)

    loadable = {k: v for k, v in state.items() if k in own}
    result = model.load_state_dict(loadable, strict=False)
    report.new = sorted(result.missing_keys)
    if logger is not None:
        from mmengine.logging import print_log
        print_log(report.format(), logger=logger)
    return report
