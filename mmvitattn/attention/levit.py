"""LeViT's attention-biased softmax (Graham et al., ICCV 2021) and its Armour forms, registered as ``'levit'``.

softmax(s q k^T + B) v, Hardswish, then a BN-linear projection; q, k have ``key_dim`` channels per
head, v ``attn_ratio * key_dim``, all from one BN-linear (a bias-free linear then BatchNorm over the
tokens). B is a learned per-head bias indexed by the absolute offset (|dy|, |dx|) between query and
key positions, trained for one grid and resized to the run-time grid (:func:`resize_offset_table`).
``attention`` picks where v comes from (the Armour paper's LeViT variants):

* ``'softmax'``      LeViT: the ``qkv`` BN-linear gives q, k and v of their own;
* ``'armour'``       v = [q | v_own], v_own ``(attn_ratio - 1) * key_dim`` channels per head (still ``qkv``);
* ``'armour_plus'``  v = [q | k], no value projection (``qk``); needs ``attn_ratio == 2``.

Attention biases at run-time sizes (this project's choice). A table is trained for one grid
(Rh, Rw): entry [dy, dx] for 0 <= dy < Rh, 0 <= dx < Rw. For a key grid (H, W) other than the
trained one the table is unfolded to signed offsets (mirrored, so the function is even and smooth
through offset 0), sampled bicubically with corner alignment -- offset d on the new grid reads
offset d * (R - 1) / (H - 1) of the table -- and indexed by the absolute offsets of the run-time
grid. ``bias_mode='clamp'`` keeps the trained distances instead: an offset inside the table reads
its own entry, a larger one the last entry of that axis. Nothing is cached.

Batch padding: padded tokens are no keys, and each image's bias is made for its own key grid, so in
eval mode an image gets the result it gets alone (BatchNorm's batch statistics in training mode
include padded tokens).
"""
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..padding import image_sizes, strided_size
from .base import TokenMixer, register_attention
from .projections import BNLinear

LEVIT_ATTENTIONS = ('softmax', 'armour', 'armour_plus')
ATTN_BIAS_MODES = ('interpolate', 'clamp')


def _abs_offsets(q_len: int, k_len: int, q_stride: int, device) -> torch.Tensor:
    """(q_len, k_len) |q_stride * i - j|: 1-D offsets between query i and key j."""
    q = torch.arange(q_len, device=device) * q_stride
    k = torch.arange(k_len, device=device)
    return (q[:, None] - k[None, :]).abs()


def _unit_grid(n: int, device) -> torch.Tensor:
    """``n`` points evenly over [0, 1] (0 alone for n = 1). When exporting, arange / (n - 1) (equal
    within an ulp): torch.export freezes ``torch.linspace``'s length at the traced size."""
    if n == 1:
        return torch.zeros(1, device=device)
    if torch.compiler.is_exporting():
        return torch.arange(n, device=device, dtype=torch.float32) / (n - 1)
    return torch.linspace(0, 1, n, device=device, dtype=torch.float32)


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
    gy, gx = _unit_grid(h, table.device), _unit_grid(w, table.device)
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
        qh, qw = strided_size((kh, kw), s)  # queries on every s-th row and column
        dy = _abs_offsets(qh, kh, s, dev)  # (Hq, Hk)
        dx = _abs_offsets(qw, kw, s, dev)  # (Wq, Wk)
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
        out = self.attention_biases.new_zeros(key_pad.shape[0], heads, *strided_size((kh, kw), s), kh, kw)
        cache = {}
        for i, (h, w) in enumerate(image_sizes(key_pad, key_hw)):
            if (h, w) not in cache:
                cache[h, w] = self.attention_bias((h, w)).reshape(heads, *strided_size((h, w), s), h, w)
            bias = cache[h, w]
            out[i, :, :bias.shape[1], :bias.shape[2], :h, :w] = bias
        out = out.reshape(out.shape[0], heads, -1, kh * kw)
        return out.masked_fill(key_pad[:, None, None, :], float('-inf'))

    def extra_repr(self) -> str:
        return f'trained_grid={self.resolution}, bias_mode={self.bias_mode!r}'


@register_attention('levit')
class LeViTAttention(_BiasedAttention, TokenMixer):
    """LeViT's residual attention as a token mixer, v chosen by ``attention`` ('softmax', 'armour'
    or 'armour_plus'; see the module docstring). Heads need not divide ``dim``: each has
    ``key_dim`` query/key channels (default: ``dim // (num_heads * attn_ratio)``, so the value width
    is ``dim``). ``resolution``: the key grid the bias table is trained for."""
    takes_prefix_tokens = False

    def __init__(self, dim: int, num_heads: int, key_dim: Optional[int] = None, attn_ratio: float = 2.0,
                 attention: str = 'softmax', resolution: Tuple[int, int] = (14, 14),
                 bias_mode: str = 'interpolate', out_bn_init: float = 0.0):
        nn.Module.__init__(self)  # not TokenMixer's head split: LeViT's widths are per head
        if key_dim is None:
            key_dim = int(dim // (num_heads * attn_ratio))
        if not isinstance(key_dim, int) or key_dim <= 0:
            raise ValueError(f'key_dim must be a positive int, got {key_dim!r} (dim={dim}, num_heads={num_heads})')
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
        self.dim = dim
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
        return strided_size(hw, self.stride)

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
