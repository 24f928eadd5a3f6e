"""ViT / DeiT checkpoints (DeiT, InLine-DeiT, timm, mmengine) -> the plain ViT's state dict
(:func:`convert_vit_checkpoint`): unwrapping, distilled DeiT files, the position embedding resized
to the model's grid."""
import math
from typing import Dict, Optional, Tuple

import torch

from ..backbones.common import resize_pos_embed
from .loading import unwrap_state


def convert_vit_checkpoint(checkpoint: dict, model=None, prefix: Optional[str] = None,
                           src_grid: Optional[Tuple[int, int]] = None) -> Dict[str, torch.Tensor]:
    """DeiT / InLine-DeiT / timm / mmengine ViT checkpoint -> a state dict for ``model``.

    - unwraps ``{'model': ...}`` (DeiT, InLine releases) and ``{'state_dict': ...}`` (mmengine),
      strips ``module.`` and ``prefix`` (e.g. ``'backbone.'``);
    - distilled DeiT: drops ``dist_token``/``head_dist`` and the distillation slot of ``pos_embed``;
    - with ``model``: drops ``head.*`` when the model has no head of that shape, ``norm.*`` when it
      has no final norm (per-output norms instead), ``cls_token`` and its ``pos_embed`` slot when it
      has no cls token, and resizes ``pos_embed`` to the model's pretraining grid with the model's
      interpolation. The checkpoint grid is taken as square (released models are) unless
      ``src_grid`` is given.
    Names already match the released classes, so nothing else is renamed.
    """
    out = {}
    for k, v in unwrap_state(checkpoint).items():
        if prefix:
            if not k.startswith(prefix):
                continue
            k = k[len(prefix):]
        out[k] = v
    state = out

    ckpt_prefix = 0
    if 'cls_token' in state:
        ckpt_prefix += 1
    if 'dist_token' in state:
        state.pop('dist_token')
        for k in [k for k in state if k.startswith('head_dist.')]:
            state.pop(k)
        if 'pos_embed' in state:  # [cls, dist, grid...] -> [cls, grid...]
            pe = state['pos_embed']
            state['pos_embed'] = torch.cat([pe[:, :ckpt_prefix], pe[:, ckpt_prefix + 1:]], dim=1)
    if model is None:
        return state

    if model.head is None or ('head.weight' in state and state['head.weight'].shape != model.head.weight.shape):
        for k in [k for k in state if k.startswith('head.')]:
            state.pop(k)
    if model.norm is None:
        for k in [k for k in state if k.startswith('norm.')]:
            state.pop(k)
    if 'pos_embed' in state:
        pe = state['pos_embed']
        if model.cls_token is None and ckpt_prefix:
            pe = pe[:, ckpt_prefix:]
            state.pop('cls_token', None)
            ckpt_prefix = 0
        if ckpt_prefix != model.num_prefix_tokens:
            raise ValueError(f'checkpoint has {ckpt_prefix} prefix tokens, the model '
                             f'{model.num_prefix_tokens}: cannot map the position embedding')
        grid_tokens = pe.shape[1] - ckpt_prefix
        if src_grid is None:
            side = math.isqrt(grid_tokens)
            if side * side != grid_tokens:
                raise ValueError(f'checkpoint pos_embed has {grid_tokens} grid entries, not a square '
                                 'grid; pass src_grid=(h, w)')
            src_grid = (side, side)
        state['pos_embed'] = resize_pos_embed(pe, src_grid, model.pos_grid, ckpt_prefix,
                                                  model.interpolate_mode, model.interpolate_antialias)
    return state
