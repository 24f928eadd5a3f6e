"""LeViT checkpoints: timm's linear- and conv-mode layouts and the official facebookresearch/LeViT
one -> ours (:func:`convert_levit_checkpoint`). The softmax -> Armour warm start is the one of
every family (:func:`mmvitattn.checkpoint.loading.warm_start_armour`)."""
import re
from typing import Dict

import torch

from .loading import drop_derived_buffers, unwrap_state



def _official_to_ours(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """facebookresearch/LeViT keys -> ours. Its blocks are one flat list: residual attentions
    (``blocks.n.m.qkv``), residual MLPs (``blocks.n.m.0``/``.2``) and shrinking attentions
    (``blocks.n.kv``/``q.1``/``proj.1``), each followed by its MLP. The stage and block each entry
    belongs to follow from that order."""
    leaf = {'c': 'linear', 'bn': 'bn', 'l': 'linear'}
    kinds = {}
    for key in state_dict:
        m = re.match(r'blocks\.(\d+)\.(m\.qkv|m\.0|kv)\.', key)
        if m:
            kinds[int(m.group(1))] = {'m.qkv': 'attn', 'm.0': 'mlp', 'kv': 'shrink'}[m.group(2)]
    place = {}  # official block index -> our module prefix
    stage, block, after = 0, -1, None
    for idx in sorted(kinds):
        kind = kinds[idx]
        if kind == 'attn':
            block += 1
            place[idx] = f'stages.{stage}.blocks.{block}.attn'
            after = f'stages.{stage}.blocks.{block}.mlp'
        elif kind == 'shrink':
            stage, block = stage + 1, -1
            place[idx] = f'stages.{stage}.downsample.attn_downsample'
            after = f'stages.{stage}.downsample.mlp'
        else:
            if after is None:
                raise ValueError(f'official LeViT checkpoint: MLP blocks.{idx} follows no attention')
            place[idx], after = after, None
    out = {}
    for key, value in state_dict.items():
        m = re.match(r'patch_embed\.(\d)\.(c|bn)\.(.+)$', key)
        if m:
            out[f'stem.conv{int(m.group(1)) // 2 + 1}.{leaf[m.group(2)]}.{m.group(3)}'] = value
            continue
        m = re.match(r'(head|head_dist)\.(bn|l)\.(.+)$', key)
        if m:
            out[f'{m.group(1)}.{leaf[m.group(2)]}.{m.group(3)}'] = value
            continue
        m = re.match(r'blocks\.(\d+)\.(.+)$', key)
        if not m:
            out[key] = value
            continue
        prefix, rest = place[int(m.group(1))], m.group(2)
        rest = re.sub(r'^m\.', '', rest)  # residual wrappers hold their module as ``m``
        patterns = [
            (r'^qkv\.(c|bn)\.(.+)$', 'qkv'), (r'^kv\.(c|bn)\.(.+)$', 'kv'), (r'^q\.1\.(c|bn)\.(.+)$', 'q.ln'),
            (r'^proj\.1\.(c|bn)\.(.+)$', 'proj.ln'), (r'^0\.(c|bn)\.(.+)$', 'ln1'), (r'^2\.(c|bn)\.(.+)$', 'ln2'),
        ]
        if rest == 'attention_biases':
            out[f'{prefix}.attention_biases'] = value
            continue
        for pattern, name in patterns:
            mm = re.match(pattern, rest)
            if mm:
                out[f'{prefix}.{name}.{leaf[mm.group(1)]}.{mm.group(2)}'] = value
                break
        else:
            raise ValueError(f'official LeViT checkpoint: unexpected key {key!r}')
    return out


def convert_levit_checkpoint(checkpoint: Dict, model=None) -> Dict[str, torch.Tensor]:
    """Convert a LeViT checkpoint to this module's state-dict layout.

    Reads timm's linear-mode models (``levit_128s``, ...: the same names as ours), timm's conv-mode
    models (``levit_conv_*``: 1x1 convs become linears) and the official facebookresearch/LeViT
    layout (``patch_embed.*``, flat ``blocks.*``; its ``model`` entry is unwrapped). The
    non-persistent ``attention_bias_idxs`` buffers are dropped (our bias lookup is computed for the
    run-time grid). With ``model`` given, classifier weights whose shapes do not fit it (or that it
    does not have) are dropped, so an ImageNet checkpoint initializes a backbone.
    Only softmax LeViT checkpoints exist; Armour models have other projection widths.
    """
    state = drop_derived_buffers(unwrap_state(checkpoint))
    if any(k.startswith('patch_embed.') for k in state):
        state = _official_to_ours(state)
    out = {}
    for key, value in state.items():
        if (not key.startswith('stem.') and key.endswith('linear.weight') and value.dim() == 4
                and value.shape[-2:] == (1, 1)):
            value = value.flatten(1)  # conv-mode 1x1 conv -> linear
        out[key] = value
    if model is not None:
        own = model.state_dict()
        for key in [k for k in out if k.startswith(('head.', 'head_dist.'))]:
            if key not in own or own[key].shape != out[key].shape:
                del out[key]
    return out
