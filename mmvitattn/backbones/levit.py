"""LeViT (Graham et al., ICCV 2021) and its Armour generalizations as dense-prediction backbones.

Structure (as in the paper and timm's ``levit_*`` linear-mode models):

* stem: four stride-2 3x3 conv + BatchNorm layers with Hardswish between them (stride 16);
* three stages of residual blocks ``x + attn(x)``, ``x + mlp(x)`` whose layers are all
  "BN-linear" (a bias-free linear followed by BatchNorm over channels); stage 2 and 3 start with a
  shrinking attention block that subsamples the queries by 2 (stride 32, 64) and widens the map;
* LeViT attention: q, k with ``key_dim`` channels per head, v with ``attn_ratio * key_dim``,
  softmax(s q k^T + B) v, Hardswish, then a BN-linear projection. B is a learned per-head bias
  indexed by the absolute offset (|dy|, |dx|) between query and key positions.

Attention per stage (``attention=`` one name, or one per stage; Armour paper, LeViT variants):

* ``'softmax'``      LeViT: one ``qkv`` BN-linear gives q, k and v of their own.
* ``'armour'``       Armour-LeViT (128S style): v keeps only ``(attn_ratio - 1) * key_dim`` channels of
                     its own projection per head and is completed by q: v = [q | v_own]; the value
                     width (and so ``proj``) is unchanged. The BN-linear is still named ``qkv``.
* ``'armour_plus'``  Armour+-LeViT (128S+ style): v's projection is removed, v = [q | k]; needs
                     ``attn_ratio == 2``. The BN-linear is named ``qk``.

The shrinking attention blocks are LeViT's in every variant. With the 1000-class head and LeViT's
distillation head these readings reproduce the Armour paper's parameter counts (7.76 / 7.47 / 7.18M
for 128S, ...; see the tests).

Attention biases at run-time sizes (this project's choice). A table is trained for one grid
(Rh, Rw) (14x14, 7x7, 4x4 at 224): entry [dy, dx] for 0 <= dy < Rh, 0 <= dx < Rw. For a key grid
(H, W) other than the trained one the table is *resized*, like a Swin relative-position table: it is
unfolded to signed offsets (mirrored, so the function is even and smooth through offset 0), sampled
bicubically with corner alignment -- offset d on the new grid reads offset d * (R - 1) / (H - 1) of
the table, so offset 0 and the largest offset map onto each other -- and indexed by the absolute
offsets of the run-time grid. At the trained grid this is the plain table lookup. The alternative
``attn_bias_mode='clamp'`` keeps the trained distances instead: an offset inside the table reads its
own entry, a larger one the last entry of that axis (exact for smaller grids, and independent of the
size of the batch's padded canvas). Nothing is cached; the bias follows the parameters.

Outputs (``out_indices``) are numbered by stride:

=====  ======  =================================  ==================
level  stride  tensor                             channels
=====  ======  =================================  ==================
0      4       stem, after conv2 + Hardswish      embed_dims[0] // 4
1      8       stem, after conv3 + Hardswish      embed_dims[0] // 2
2      16      stage 1                            embed_dims[0]
3      32      stage 2                            embed_dims[1]
4      64      stage 3                            embed_dims[2]
=====  ======  =================================  ==================

The default ``(2, 3, 4)`` gives the three stage maps (UperNet / 3-level necks); ``(0, 1, 2, 3, 4)``
or ``(1, 2, 3, 4)`` feed a 5- or 4-input FPN. Inputs are zero-padded on the bottom/right up to a
multiple of 16; the stride-32/64 maps are ``ceil`` of half the previous one (LeViT subsamples
queries at even positions). ``frozen_stages``: 0 freezes the stem, k >= 1 the stem and the first k
stages.

Batch padding (``pad_mask``): the stem zeroes every conv's input beyond each image's own
(16-rounded) extent, padded tokens are no keys, each image's attention bias is made for its own
key grid, and padded positions of the returned maps are zero, so in eval mode an image gets the
features it gets alone. In training mode BatchNorm's batch statistics still include padded
positions (as any BatchNorm backbone's do).

Attribute names follow timm's linear-mode ``levit_*`` models, so their state dicts load after
:func:`convert_levit_checkpoint`, which also reads timm's conv-mode ``levit_conv_*`` and the
official facebookresearch/LeViT layouts.
"""
import contextlib
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_
from timm.layers import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS
from ..attention import ATTENTIONS, build_attention
from .attention_spec import constructor_options, resolve_attention, resolve_attn_cfgs, stage_summary
from ..padding import downsample_pad_mask, real_sizes, tokens_to_map
from .common import BackboneBase, check_out_indices, per_stage

# The released LeViT sizes (key_dim is shared by every attention of a model).
LEVIT_ARCHS = {
    '128s': dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depths=(2, 3, 4)),
    '128': dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 8, 12), depths=(4, 4, 4)),
    '192': dict(embed_dims=(192, 288, 384), key_dim=32, num_heads=(3, 5, 6), depths=(4, 4, 4)),
    '256': dict(embed_dims=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depths=(4, 4, 4)),
    '384': dict(embed_dims=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depths=(4, 4, 4)),
}
LEVIT_ATTENTIONS = ('softmax', 'armour', 'armour_plus')
ATTN_BIAS_MODES = ('interpolate', 'clamp')
_VARIANT_PREFIXES = {'levit': 'softmax', 'armour-levit': 'armour', 'armour-plus-levit': 'armour_plus'}
# 'levit-128s', 'armour-levit-192', 'armour-plus-levit-384', ...
LEVIT_VARIANTS = {f'{prefix}-{arch}': (arch, attention)
                  for prefix, attention in _VARIANT_PREFIXES.items() for arch in LEVIT_ARCHS}
STEM_STRIDE = 16


def levit_mixer_options(name: str):
    """Options a LeViT block's mixer takes from ``attn_cfgs``: none for LeViT's own forms."""
    return frozenset() if name in LEVIT_ATTENTIONS else constructor_options(name)

NUM_LEVELS = 5  # two stem maps + three stages
LEVEL_STRIDES = (4, 8, 16, 32, 64)


def _pair(value) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
class BNLinear(nn.Module):
    """Bias-free linear over the channels of tokens (B, N, C), then BatchNorm over all B*N tokens."""

    def __init__(self, in_dim: int, out_dim: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.flatten(0, -2)).view_as(y)


class BNConv(nn.Module):
    """Bias-free 3x3 stride-2 conv + BatchNorm2d. (The conv is named ``linear`` as in timm.)"""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.linear = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x))


class LeViTStem(nn.Module):
    """Four BN-convs (widths C/8, C/4, C/2, C) with Hardswish between: stride 16.
    Returns the stride-16 map and the stride-4 and stride-8 activations (levels 0 and 1)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        widths = (in_chans, dim // 8, dim // 4, dim // 2, dim)
        for i in range(4):
            self.add_module(f'conv{i + 1}', BNConv(widths[i], widths[i + 1]))
            if i < 3:
                self.add_module(f'act{i + 1}', nn.Hardswish())

    def forward(self, x: torch.Tensor):
        x = self.act1(self.conv1(x))
        x4 = self.act2(self.conv2(x))
        x8 = self.act3(self.conv3(x4))
        return self.conv4(x8), (x4, x8)


def _abs_offsets(q_len: int, k_len: int, q_stride: int, device) -> torch.Tensor:
    """(q_len, k_len) |q_stride * i - j|: 1-D offsets between query i and key j."""
    q = torch.arange(q_len, device=device) * q_stride
    k = torch.arange(k_len, device=device)
    return (q[:, None] - k[None, :]).abs()


def resize_offset_table(table: torch.Tensor, size: Tuple[int, int], mode: str = 'interpolate') -> torch.Tensor:
    """Resize a (heads, Rh, Rw) table over absolute offsets to (heads, H, W) (see the module doc).

    ``'interpolate'``: bicubic over the mirrored (signed-offset) table, corners aligned: new offset
    (dy, dx) reads table offset (dy * (Rh - 1) / (H - 1), dx * (Rw - 1) / (W - 1)).
    ``'clamp'``: new offset (dy, dx) reads table entry (min(dy, Rh - 1), min(dx, Rw - 1)).
    """
    heads, rh, rw = table.shape
    h, w = size
    if (rh, rw) == (h, w):
        return table
    if mode == 'clamp':
        iy = torch.arange(h, device=table.device).clamp_max(rh - 1)
        ix = torch.arange(w, device=table.device).clamp_max(rw - 1)
        return table[:, iy[:, None], ix[None, :]]
    if mode != 'interpolate':
        raise ValueError(f'unknown attention-bias mode {mode!r}; expected one of {ATTN_BIAS_MODES}')
    # Signed offsets -(R-1)..(R-1): the table mirrored about offset 0.
    signed = torch.cat([table.flip(1)[:, :-1], table], dim=1)
    signed = torch.cat([signed.flip(2)[:, :, :-1], signed], dim=2)
    # With align_corners=True, normalized coordinate 0 is offset 0 and 1 is offset R-1; new offset
    # d sits at d / (H - 1) (or 0 when the new grid has a single row/column).
    gy = torch.linspace(0, 1, h, device=table.device, dtype=torch.float32) if h > 1 else \
        torch.zeros(1, device=table.device)
    gx = torch.linspace(0, 1, w, device=table.device, dtype=torch.float32) if w > 1 else \
        torch.zeros(1, device=table.device)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing='xy'), dim=-1)  # (h, w, 2) as (x, y)
    out = F.grid_sample(signed[None].float(), grid[None], mode='bicubic', padding_mode='border',
                        align_corners=True)
    return out[0].to(table.dtype)


class _BiasedAttention(nn.Module):
    """Shared part of LeViT's attentions: the learned offset-indexed bias."""

    def _init_bias(self, num_heads: int, resolution: Tuple[int, int], stride: int, bias_mode: str):
        if bias_mode not in ATTN_BIAS_MODES:
            raise ValueError(f'unknown attn_bias_mode {bias_mode!r}; expected one of {ATTN_BIAS_MODES}')
        self.resolution = tuple(resolution)  # the key grid the table was trained for
        self.q_stride = stride
        self.bias_mode = bias_mode
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))

    def attention_bias(self, key_hw: Tuple[int, int]) -> torch.Tensor:
        """(heads, Nq, Nk) bias for a key grid ``key_hw`` whose queries sit every ``q_stride``."""
        kh, kw = key_hw
        s = self.q_stride
        table = self.attention_biases.view(-1, *self.resolution)
        table = resize_offset_table(table, (kh, kw), self.bias_mode)
        dev = table.device
        dy = _abs_offsets((kh - 1) // s + 1, kh, s, dev)  # (Hq, Hk)
        dx = _abs_offsets((kw - 1) // s + 1, kw, s, dev)  # (Wq, Wk)
        bias = table[:, dy[:, None, :, None], dx[None, :, None, :]]  # (heads, Hq, Wq, Hk, Wk)
        return bias.reshape(table.shape[0], dy.shape[0] * dx.shape[0], kh * kw)

    def batch_bias(self, key_hw: Tuple[int, int], key_pad: Optional[torch.Tensor]) -> torch.Tensor:
        """The additive attention mask: the bias, plus -inf on padded keys. Without padding the
        shared (heads, Nq, Nk) bias; with padding (B, heads, Nq, Nk), each image's bias made for
        its own key grid (the bias is resized to the grid, so it is the one the image gets alone)."""
        if key_pad is None:
            return self.attention_bias(key_hw)
        kh, kw = key_hw
        s = self.q_stride
        heads = self.attention_biases.shape[0]
        out = self.attention_biases.new_zeros(key_pad.shape[0], heads, (kh - 1) // s + 1, (kw - 1) // s + 1,
                                              kh, kw)
        cache = {}
        for i, (h, w) in enumerate(real_sizes(key_pad, key_hw)):
            if (h, w) not in cache:
                cache[h, w] = self.attention_bias((h, w)).reshape(heads, (h - 1) // s + 1, (w - 1) // s + 1, h, w)
            bias = cache[h, w]
            out[i, :, :bias.shape[1], :bias.shape[2], :h, :w] = bias
        out = out.reshape(out.shape[0], heads, -1, kh * kw)
        return out.masked_fill(key_pad[:, None, None, :], float('-inf'))

    def extra_repr(self) -> str:
        return f'trained_grid={self.resolution}, bias_mode={self.bias_mode!r}'


class LeViTAttention(_BiasedAttention):
    """LeViT's residual attention (token mixer) with the value projection chosen by ``attention``
    ('softmax', 'armour' or 'armour_plus'; see the module docstring)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float = 2.0,
                 attention: str = 'softmax', resolution: Tuple[int, int] = (14, 14),
                 bias_mode: str = 'interpolate', out_bn_init: float = 0.0):
        super().__init__()
        if attention not in LEVIT_ATTENTIONS:
            raise ValueError(f'unknown LeViT attention {attention!r}; expected one of {LEVIT_ATTENTIONS}')
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f'num_heads must be a positive int, got {num_heads!r}')
        val_dim = int(attn_ratio * key_dim)
        if val_dim != attn_ratio * key_dim or val_dim <= 0:
            raise ValueError(f'attn_ratio={attn_ratio} must make attn_ratio * key_dim ({key_dim}) a '
                             'positive integer')
        if attention == 'armour' and val_dim <= key_dim:
            raise ValueError(f"'armour' attention completes v with q, so it needs attn_ratio > 1, "
                             f'got attn_ratio={attn_ratio}')
        if attention == 'armour_plus' and val_dim != 2 * key_dim:
            raise ValueError(f"'armour_plus' attention sets v = [q | k], so it needs attn_ratio == 2, "
                             f'got attn_ratio={attn_ratio}')
        self.attention = attention
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = val_dim
        self.scale = key_dim**-0.5
        # Per head the projection holds [q | k | own part of v] (timm/official interleaving).
        self.own_val_dim = {'softmax': val_dim, 'armour': val_dim - key_dim, 'armour_plus': 0}[attention]
        width = num_heads * (2 * key_dim + self.own_val_dim)
        if attention == 'armour_plus':
            self.qk = BNLinear(dim, width)
        else:
            self.qkv = BNLinear(dim, width)
        self.proj = nn.Sequential(OrderedDict([
            ('act', nn.Hardswish()),
            ('ln', BNLinear(num_heads * val_dim, dim, bn_weight_init=out_bn_init)),
        ]))
        self._init_bias(num_heads, resolution, 1, bias_mode)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens (B, H*W, C) over the grid ``hw``; padded tokens (``pad_mask``) are no keys."""
        b, n, _ = x.shape
        if hw[0] * hw[1] != n:
            raise ValueError(f'token map {hw[0]}x{hw[1]} needs {hw[0] * hw[1]} tokens, got {n}')
        kd = self.key_dim
        proj = self.qk if self.attention == 'armour_plus' else self.qkv
        parts = proj(x).view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, h, N, .)
        q, k, v_own = parts.split([kd, kd, self.own_val_dim], dim=-1)
        if self.attention == 'softmax':
            v = v_own
        elif self.attention == 'armour':
            v = torch.cat([q, v_own], dim=-1)
        else:
            v = torch.cat([q, k], dim=-1)
        bias = self.batch_bias(hw, pad_mask).to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, n, -1))


class _SubsampledQuery(nn.Module):
    """The shrinking attention's query branch: keep every ``stride``-th row and column, BN-linear."""

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.stride = stride
        self.ln = BNLinear(dim, out_dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        s = self.stride
        x = x.reshape(b, *hw, c)[:, ::s, ::s].reshape(b, -1, c)
        return self.ln(x)


class LeViTShrinkAttention(_BiasedAttention):
    """LeViT's shrinking attention: queries on the grid subsampled by ``stride``, keys/values on the
    full grid, ``in_dim // key_dim`` heads, value ratio 4, output width ``out_dim``. Not residual.
    Left unchanged in the Armour variants."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, attn_ratio: float = 4.0, stride: int = 2,
                 resolution: Tuple[int, int] = (14, 14), bias_mode: str = 'interpolate'):
        super().__init__()
        if in_dim % key_dim:
            raise ValueError(f'the shrinking attention uses in_dim // key_dim heads: key_dim={key_dim} '
                             f'must divide the stage width {in_dim}')
        self.num_heads = in_dim // key_dim
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim**-0.5
        self.stride = stride
        self.kv = BNLinear(in_dim, self.num_heads * (key_dim + self.val_dim))
        self.q = _SubsampledQuery(in_dim, self.num_heads * key_dim, stride)
        self.proj = nn.Sequential(OrderedDict([
            ('act', nn.Hardswish()),
            ('ln', BNLinear(self.num_heads * self.val_dim, out_dim)),
        ]))
        self._init_bias(self.num_heads, resolution, stride, bias_mode)

    def out_hw(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        s = self.stride
        return ((hw[0] - 1) // s + 1, (hw[1] - 1) // s + 1)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, _ = x.shape
        if hw[0] * hw[1] != n:
            raise ValueError(f'token map {hw[0]}x{hw[1]} needs {hw[0] * hw[1]} tokens, got {n}')
        k, v = self.kv(x).view(b, n, self.num_heads, -1).transpose(1, 2).split(
            [self.key_dim, self.val_dim], dim=-1)
        q = self.q(x, hw)
        q = q.view(b, q.shape[1], self.num_heads, self.key_dim).transpose(1, 2)
        bias = self.batch_bias(hw, pad_mask).to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, q.shape[2], -1))


class LeViTMlp(nn.Module):
    """BN-linear -> Hardswish -> BN-linear (LeViT starts the last BN at zero: identity residual)."""

    def __init__(self, dim: int, hidden_dim: int, out_bn_init: float = 0.0):
        super().__init__()
        self.ln1 = BNLinear(dim, hidden_dim)
        self.act = nn.Hardswish()
        self.ln2 = BNLinear(hidden_dim, dim, bn_weight_init=out_bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.act(self.ln1(x)))


class LeViTBlock(nn.Module):
    """x + attn(x), then x + mlp(x). ``attention``: LeViT's own ('softmax', 'armour',
    'armour_plus': :class:`LeViTAttention`), or any other registered mixer, built with
    ``attn_cfg`` and ``dim // key_dim`` heads (the rule of LeViT's shrinking attention), whose own
    projections take the place of LeViT's BN-linears."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float,
                 attention: str, resolution: Tuple[int, int], bias_mode: str, drop_path: float = 0.0,
                 out_bn_init: float = 0.0, attn_cfg: Optional[dict] = None):
        super().__init__()
        if attention in LEVIT_ATTENTIONS:
            self.attn = LeViTAttention(dim, key_dim, num_heads, attn_ratio, attention, resolution, bias_mode,
                                       out_bn_init)
        else:
            if dim % key_dim:
                raise ValueError(f'{attention!r} attention in LeViT uses dim // key_dim heads: key_dim={key_dim} '
                                 f'must divide the stage width {dim}')
            self.attn = build_attention(attention, dim, dim // key_dim, **(attn_cfg or {}))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = LeViTMlp(dim, int(dim * mlp_ratio), out_bn_init)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(x, hw, pad_mask))
        return x + self.drop_path2(self.mlp(x))


class LeViTShrinkBlock(nn.Module):
    """Shrinking attention (grid /2, width in_dim -> out_dim), then x + mlp(x)."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, attn_ratio: float, mlp_ratio: float,
                 resolution: Tuple[int, int], bias_mode: str, drop_path: float = 0.0,
                 out_bn_init: float = 0.0):
        super().__init__()
        self.attn_downsample = LeViTShrinkAttention(in_dim, out_dim, key_dim, attn_ratio, 2, resolution,
                                                    bias_mode)
        self.mlp = LeViTMlp(out_dim, int(out_dim * mlp_ratio), out_bn_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.attn_downsample(x, hw, pad_mask)
        return x + self.drop_path(self.mlp(x))


class LeViTStage(nn.Module):
    """``downsample`` (a shrink block, or nothing for the first stage) then ``blocks``."""

    def __init__(self, downsample: Optional[nn.Module], blocks: List[nn.Module]):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.ModuleList(blocks)


class BNHead(nn.Module):
    """ImageNet classifier: BatchNorm1d -> dropout -> linear (LeViT's head and distillation head)."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(dim, num_classes)
        trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))


@contextlib.contextmanager
def _keep_bn_statistics(module: nn.Module):
    """Restore BatchNorm running statistics on exit: gradient checkpointing re-runs the forward
    during backward, which would otherwise update them a second time."""
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
             and m.running_mean is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------
@MODELS.register_module()
class LeViT(BackboneBase):
    """LeViT backbone with its biased softmax, Armour, or any registered attention per stage.

    Args:
        arch: '128s', '128', '192', '256' or '384' (the released sizes), or None with explicit
            ``embed_dims``/``key_dim``/``num_heads``/``depths``. Given with an arch, any of
            those four overrides the arch's value (e.g. reduced ``depths`` for tests).
        variant: a full model name instead of ``arch`` + ``attention``: 'levit-128s',
            'armour-levit-256', 'armour-plus-levit-384', ... (see ``LEVIT_VARIANTS``). It replaces
            the default arch; a different explicit arch or attention is an error.
        attention: 'softmax', 'armour' or 'armour_plus' (LeViT's attention-biased forms), or any
            other registered mixer ('inline', 'castling', ...; see :class:`LeViTBlock`), for
            every stage or one per stage (or block): the grammar of
            :mod:`~mmvitattn.backbones.attention_spec`. The shrinking blocks stay LeViT's.
        attn_cfgs: options of the registered mixers, one dict for all stages or one per stage
            (or block), e.g. ``attn_cfgs=dict(aux_softmax=True)`` for 'castling'; LeViT's own forms take
            none (``attn_ratio``, ``attn_bias_mode`` set them).
        attn_ratio / mlp_ratio: value ratio and MLP ratio of the residual blocks (per stage; 2, 2).
        down_attn_ratio / down_mlp_ratio: the same for the shrinking blocks (4, 2).
        pretrain_img_size: the input size the attention-bias tables are trained for (224).
        attn_bias_mode: 'interpolate' (resize the tables to the run-time grid) or 'clamp'.
        zero_init_residual: start the BN at the end of every residual branch (attention ``proj``,
            MLP ``ln2``) at zero, as LeViT does, so blocks start as identities. Only matters when
            training from scratch; with it the first optimizer step only reaches those BNs.
        out_indices: output levels 0..4 (strides 4, 8, 16, 32, 64; see the module docstring).
        out_norm: a LayerNorm over channels on every returned map (``out_norms.<level>``).
        num_classes: > 0 adds LeViT's BN-linear ImageNet head (``head``), and with
            ``distillation=True`` its distillation head (``head_dist``); ``forward_classifier``
            then returns the average of the two, as LeViT does at inference.
        frozen_stages: -1 none, 0 the stem, k the stem and the first k stages.
        norm_eval, with_cp, drop_path_rate, init_cfg: the usual backbone options. ``init_cfg=
            dict(type='Pretrained', checkpoint=path)`` reads timm or official LeViT checkpoints
            through :func:`convert_levit_checkpoint`.
    """
    default_attention: Optional[str] = None
    num_stages = 3
    DEFAULT_ARCH = '128s'

    def __init__(self, arch: Optional[str] = '128s', variant: Optional[str] = None,
                 attention: Union[str, Sequence[str], None] = None,
                 attn_cfgs: Union[dict, Sequence[dict], None] = None,
                 embed_dims: Optional[Sequence[int]] = None, key_dim: Optional[int] = None,
                 num_heads: Optional[Sequence[int]] = None, depths: Optional[Sequence[int]] = None,
                 attn_ratio: Union[float, Sequence[float]] = 2.0,
                 mlp_ratio: Union[float, Sequence[float]] = 2.0, down_attn_ratio: float = 4.0,
                 down_mlp_ratio: float = 2.0, in_channels: int = 3,
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224, attn_bias_mode: str = 'interpolate',
                 drop_path_rate: float = 0.0, zero_init_residual: bool = True,
                 out_indices: Sequence[int] = (2, 3, 4), out_norm: bool = False,
                 num_classes: int = 0, distillation: bool = True, drop_rate: float = 0.0,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        arch, attention = self._resolve_variant(variant, arch, attention)
        if arch is not None:
            if arch not in LEVIT_ARCHS:
                raise ValueError(f'unknown LeViT arch {arch!r}; expected one of {sorted(LEVIT_ARCHS)} '
                                 'or arch=None with explicit embed_dims, key_dim, num_heads and depths')
            spec = LEVIT_ARCHS[arch]
            embed_dims = spec['embed_dims'] if embed_dims is None else embed_dims
            key_dim = spec['key_dim'] if key_dim is None else key_dim
            num_heads = spec['num_heads'] if num_heads is None else num_heads
            depths = spec['depths'] if depths is None else depths
        missing = [name for name, value in (('embed_dims', embed_dims), ('key_dim', key_dim),
                                            ('num_heads', num_heads), ('depths', depths)) if value is None]
        if missing:
            raise ValueError(f'LeViT with arch=None needs {", ".join(missing)}')
        if not isinstance(key_dim, int) or key_dim <= 0:
            raise ValueError(f'key_dim must be a positive int, got {key_dim!r}')
        if min(_pair(pretrain_img_size)) < STEM_STRIDE:
            raise ValueError(f'pretrain_img_size={pretrain_img_size!r} is smaller than the stem stride '
                             f'{STEM_STRIDE}; the attention-bias tables need at least one token')
        n = self.num_stages
        embed_dims = per_stage(embed_dims, n, 'embed_dims')
        num_heads = per_stage(num_heads, n, 'num_heads')
        depths = per_stage(depths, n, 'depths')
        attn_ratio = per_stage(attn_ratio, n, 'attn_ratio')
        mlp_ratio = per_stage(mlp_ratio, n, 'mlp_ratio')
        for i, depth in enumerate(depths):
            if not isinstance(depth, int) or depth < 0:
                raise ValueError(f'depths[{i}]={depth!r} must be an int >= 0')
        known = sorted(set(LEVIT_ATTENTIONS) | set(ATTENTIONS))
        block_attention = resolve_attention(attention, depths, known, owner=type(self).__name__,
                                            label='LeViT attention')
        block_cfgs = resolve_attn_cfgs(attn_cfgs, block_attention, known, options=levit_mixer_options)
        if embed_dims[0] % 8:
            raise ValueError(f'the stem halves the width three times: embed_dims[0]={embed_dims[0]} '
                             'must be a multiple of 8')
        if attn_bias_mode not in ATTN_BIAS_MODES:
            raise ValueError(f'unknown attn_bias_mode {attn_bias_mode!r}; expected one of {ATTN_BIAS_MODES}')
        if not -1 <= frozen_stages <= n:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range; expected -1..{n} '
                             '(0 = stem, k = stem and the first k stages)')
        self.out_indices = check_out_indices(out_indices, NUM_LEVELS)
        if not self.out_indices:
            raise ValueError('out_indices is empty; expected one or more levels from 0..4')
        self.embed_dims = embed_dims
        self.attention = stage_summary(block_attention)
        self.key_dim = key_dim
        self.out_channels = (embed_dims[0] // 4, embed_dims[0] // 2, *embed_dims)
        self.out_strides = LEVEL_STRIDES

        out_bn_init = 0.0 if zero_init_residual else 1.0
        self.stem = LeViTStem(in_channels, embed_dims[0])
        grid = tuple(s // STEM_STRIDE for s in _pair(pretrain_img_size))
        num_blocks = sum(depths) + (n - 1)  # the shrink blocks' MLPs are residual too
        dpr = iter([drop_path_rate * j / max(num_blocks - 1, 1) for j in range(num_blocks)])  # linear decay
        stages = []
        for i in range(n):
            down = None
            if i > 0:
                down = LeViTShrinkBlock(embed_dims[i - 1], embed_dims[i], key_dim, down_attn_ratio,
                                        down_mlp_ratio, grid, attn_bias_mode, next(dpr), out_bn_init)
                grid = tuple((g - 1) // 2 + 1 for g in grid)
            blocks = [LeViTBlock(embed_dims[i], key_dim, num_heads[i], attn_ratio[i], mlp_ratio[i],
                                 name, grid, attn_bias_mode, next(dpr), out_bn_init, cfg)
                      for name, cfg in zip(block_attention[i], block_cfgs[i])]
            stages.append(LeViTStage(down, blocks))
        self.stages = nn.ModuleList(stages)

        self.out_norm = out_norm
        if out_norm:
            self.out_norms = nn.ModuleDict({str(i): nn.LayerNorm(self.out_channels[i]) for i in self.out_indices})
        self.num_classes = num_classes
        self.head = BNHead(embed_dims[-1], num_classes, drop_rate) if num_classes > 0 else None
        self.head_dist = BNHead(embed_dims[-1], num_classes, drop_rate) if num_classes > 0 and distillation \
            else None
        self._freeze_stages()

    def _resolve_variant(self, variant, arch, attention):
        default = self.default_attention
        if variant is not None:
            if variant not in LEVIT_VARIANTS:
                raise ValueError(f'unknown LeViT variant {variant!r}; expected one of {sorted(LEVIT_VARIANTS)}')
            v_arch, v_attention = LEVIT_VARIANTS[variant]
            if arch not in (LeViT.DEFAULT_ARCH, v_arch):  # the default arch yields to the variant
                raise ValueError(f'variant={variant!r} is arch {v_arch!r}, but arch={arch!r} was given')
            if default is not None and default != v_attention:
                raise ValueError(f'{type(self).__name__} uses {default!r} attention; variant {variant!r} '
                                 f'uses {v_attention!r} (build it with LeViT)')
            if attention is not None and attention != v_attention:
                raise ValueError(f'variant={variant!r} uses {v_attention!r} attention, but '
                                 f'attention={attention!r} was given')
            return v_arch, v_attention
        return arch, attention or default or 'softmax'

    # --- backbone conventions ----------------------------------------------------------------------
    def _levels_of(self, index: int):
        return (0, 1) if index == 0 else (index + 1, )

    def stage_modules(self, index: int):
        items = [self.stem] if index == 0 else [self.stages[index - 1]]
        if self.out_norm:
            items += [self.out_norms[str(i)] for i in self._levels_of(index) if str(i) in self.out_norms]
        return items

    def run_block(self, block: nn.Module, x: torch.Tensor, hw, pad_mask):
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(block, x, hw, pad_mask, use_reentrant=False,
                                 context_fn=lambda: (contextlib.nullcontext(), _keep_bn_statistics(block)))
        return block(x, hw, pad_mask)

    def convert_pretrained_state(self, state):
        """timm / official LeViT layouts -> ours (:func:`convert_levit_checkpoint`); a softmax
        checkpoint warm-starts Armour attentions (:func:`adapt_levit_armour`)."""
        return adapt_levit_armour(convert_levit_checkpoint(state, self), self)

    def resize_pretrained_tensor(self, key, tensor, shape):
        """Attention biases trained on another (square) grid -> this model's grid."""
        if not key.endswith('attention_biases') or tensor.dim() != 2 or tensor.shape[0] != shape[0]:
            return None
        side = math.isqrt(tensor.shape[1])
        if side * side != tensor.shape[1]:
            return None
        module = self.get_submodule(key.rsplit('.', 1)[0])
        table = resize_offset_table(tensor.view(tensor.shape[0], side, side), module.resolution, 'interpolate')
        return table.reshape(shape)

    # --- forward -----------------------------------------------------------------------------------
    def _emit(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Level output: the NCHW map with out_norm applied, contiguous."""
        if self.out_norm:
            x = self.out_norms[str(level)](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        # mmcv's CPU RoIAlign (and other NCHW ops) silently misread channels-last views.
        return x.contiguous()

    def forward_levels(self, x: torch.Tensor, last_level: int = NUM_LEVELS - 1,
                       pad_mask: Optional[torch.Tensor] = None):
        """Run up to ``last_level``; return the final tokens, their grid and {level: output map}."""
        extra_h, extra_w = -x.shape[2] % STEM_STRIDE, -x.shape[3] % STEM_STRIDE
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h))
            if pad_mask is not None:
                pad_mask = F.pad(pad_mask, (0, extra_w, 0, extra_h), value=True)
        outs = {}
        if pad_mask is None:
            x, stem_maps = self.stem(x)
            token_pad = None
        else:
            x, stem_maps, token_pad = self.masked_stem(x, pad_mask)
        for level, m in enumerate(stem_maps):
            if level in self.out_indices:
                outs[level] = self._emit(level, m)
        hw = (x.shape[2], x.shape[3])
        tokens = x.flatten(2).transpose(1, 2)
        for i, stage in enumerate(self.stages):
            if i + 2 > last_level:
                break
            if i > 0:
                tokens = self.run_block(stage.downsample, tokens, hw, token_pad)
                new_hw = stage.downsample.attn_downsample.out_hw(hw)
                token_pad = downsample_pad_mask(token_pad, new_hw, 2, in_hw=hw)  # queries on even rows/columns
                hw = new_hw
            for block in stage.blocks:
                tokens = self.run_block(block, tokens, hw, token_pad)
            if i + 2 in self.out_indices:
                outs[i + 2] = self._emit(i + 2, tokens_to_map(tokens, hw, token_pad))
        return tokens, hw, outs

    def masked_stem(self, x: torch.Tensor, pad_mask: torch.Tensor):
        """The stem for a padded batch. Alone, an image is zero-padded to a multiple of 16 and
        those zeros are part of its input, so its stem-valid region is its size rounded up to 16;
        beyond it, each conv's input must be zero (the conv's own zero padding alone). Returns the
        stride-16 map, the stride-4/8 maps (zero beyond the valid region) and the token mask."""
        rows, cols = (torch.tensor(s, device=x.device) for s in zip(*real_sizes(pad_mask)))
        rows = -(-rows // STEM_STRIDE) * STEM_STRIDE
        cols = -(-cols // STEM_STRIDE) * STEM_STRIDE
        stem = self.stem
        maps = []
        for i in range(4):
            x = getattr(stem, f'conv{i + 1}')(x)
            if i < 3:
                x = getattr(stem, f'act{i + 1}')(x)
            scale = 2**(i + 1)
            keep = ((torch.arange(x.shape[2], device=x.device)[None, :, None] < (rows // scale)[:, None, None])
                    & (torch.arange(x.shape[3], device=x.device)[None, None, :] < (cols // scale)[:, None, None]))
            x = x * keep[:, None].to(x.dtype)
            if i in (1, 2):
                maps.append(x)
        return x, tuple(maps), ~keep.flatten(1)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded; default: the mask our
        data preprocessors attach to ``x``] -> tuple of NCHW maps for ``out_indices``. With a mask,
        in eval mode, an image gets the features it gets alone (see the module docstring)."""
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        _, _, outs = self.forward_levels(x, max(self.out_indices), pad_mask)
        return tuple(outs[i] for i in self.out_indices)

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: token mean of the last stage -> head (averaged with head_dist if present)."""
        self.check_head()
        self.resolve_pad_mask(x)  # the input check of forward
        tokens, _, _ = self.forward_levels(x)
        pooled = tokens.mean(dim=1)
        logits = self.head(pooled)
        if self.head_dist is not None:
            logits = (logits + self.head_dist(pooled)) / 2
        return logits


@MODELS.register_module()
class ArmourLeViT(LeViT):
    """LeViT with Armour attention (v = [q | v_own], W_Q shared with half of V) in every stage."""
    default_attention = 'armour'


@MODELS.register_module()
class ArmourPlusLeViT(LeViT):
    """LeViT with Armour+ attention (v = [q | k], no value projection) in every stage."""
    default_attention = 'armour_plus'


# --------------------------------------------------------------------------------------------------
# Checkpoint conversion
# --------------------------------------------------------------------------------------------------
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


def convert_levit_checkpoint(checkpoint: Dict, model: Optional[LeViT] = None) -> Dict[str, torch.Tensor]:
    """Convert a LeViT checkpoint to this module's state-dict layout.

    Reads timm's linear-mode models (``levit_128s``, ...: the same names as ours), timm's conv-mode
    models (``levit_conv_*``: 1x1 convs become linears) and the official facebookresearch/LeViT
    layout (``patch_embed.*``, flat ``blocks.*``; its ``model`` entry is unwrapped). The
    non-persistent ``attention_bias_idxs`` buffers are dropped (our bias lookup is computed for the
    run-time grid). With ``model`` given, classifier weights whose shapes do not fit it (or that it
    does not have) are dropped, so an ImageNet checkpoint initializes a backbone.
    Only softmax LeViT checkpoints exist; Armour models have other projection widths.
    """
    state = checkpoint
    for wrapper in ('model', 'state_dict'):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith('attention_bias_idxs')}
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


def adapt_levit_armour(state: Dict[str, torch.Tensor], model: LeViT) -> Dict[str, torch.Tensor]:
    """Warm-start Armour / Armour+ attentions from a softmax LeViT state dict (ours layout).

    Per head a softmax projection holds [q | k | v]; Armour's holds [q | k | v_own] with
    v = [q | v_own], Armour+'s [q | k] with v = [q | k]. The shared q is taken from the first
    ``key_dim`` channels of the value projection (so v starts as the softmax model's v), k from k and
    v_own from the rest of v. The BatchNorm statistics follow their channels. Returns a state dict
    whose ``origin`` names the source of every tensor it builds.
    """
    from ..checkpoint.loading import ConvertedState
    out = ConvertedState(state)
    for name, module in model.named_modules():
        if not isinstance(module, LeViTAttention) or module.attention == 'softmax':
            continue
        src = f'{name}.qkv.'
        weight = state.get(src + 'linear.weight')
        kd, val, heads = module.key_dim, module.val_dim, module.num_heads
        if weight is None or weight.shape[0] != heads * (2 * kd + val):
            continue  # not a softmax projection: already Armour, or absent
        # Per head the softmax rows are q: [0, kd), k: [kd, 2kd), v: [2kd, 2kd + val).
        per_head = [torch.arange(2 * kd, 3 * kd), torch.arange(kd, 2 * kd)]  # q <- v[:kd], k <- k
        if module.attention == 'armour':
            per_head.append(torch.arange(3 * kd, 2 * kd + val))  # v_own <- v[kd:]
        index = torch.cat([torch.cat(per_head) + h * (2 * kd + val) for h in range(heads)])
        dst = f'{name}.{"qk" if module.attention == "armour_plus" else "qkv"}.'
        for leaf in ('linear.weight', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var'):
            if src + leaf in state:
                out[dst + leaf] = state[src + leaf].index_select(0, index)
                out.origin[dst + leaf] = src + leaf
        if src + 'bn.num_batches_tracked' in state:
            out[dst + 'bn.num_batches_tracked'] = state[src + 'bn.num_batches_tracked']
        if dst != src:
            for key in [k for k in out if k.startswith(src)]:
                del out[key]
    return out
