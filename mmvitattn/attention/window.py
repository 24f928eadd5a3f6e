"""Swin's shifted-window softmax attention with a relative position bias, as a token mixer.

Windows are padded at run time to the actual map size and the shift mask is computed for it, so
any H x W works (detection maps are rarely square or multiples of the window). Used by the Swin
family (``backbones/swin.py``) for its ``S`` blocks; registered as ``'swin_window'``.
"""
import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..padding import per_image
from .base import QKVMixer, TokenMixer, check_tokens, register_attention
from .projections import batch_affine

# Logit added between tokens of different shift regions. The official code uses -100 (not -inf),
# so a fully masked row can never produce NaN; kept for bit-compatibility with its checkpoints.
SHIFT_MASK_VALUE = -100.0


def relative_position_index(win_h: int, win_w: int, table_size: Optional[int] = None,
                            device=None) -> torch.Tensor:
    """(win_h*win_w, win_h*win_w) index into a relative-position table laid out as a
    (2*S - 1) x (2*S - 1) grid of (dy, dx) offsets, row-major, with S = ``table_size``
    (default: the window itself, square windows only). A window smaller than the table picks
    the central offsets, so the same learned bias serves the same relative offset."""
    if table_size is None:
        if win_h != win_w:
            raise ValueError('give table_size for a non-square window')
        table_size = win_h
    ys, xs = torch.meshgrid(torch.arange(win_h, device=device), torch.arange(win_w, device=device),
                            indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + table_size - 1
    dx = xs[:, None] - xs[None, :] + table_size - 1
    return dy * (2 * table_size - 1) + dx


def resize_relative_position_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Bicubic resize of a ((2*w0 - 1)**2, heads) table to ((2*w - 1)**2, heads), as Swin's
    fine-tuning code does when the window changes (e.g. 12 at 384 -> 7 at 224)."""
    side0 = math.isqrt(table.shape[0])
    if side0 * side0 != table.shape[0]:
        raise ValueError(f'relative position table of {table.shape[0]} rows is not a square grid')
    side = 2 * window_size - 1
    if side0 == side:
        return table
    heads = table.shape[1]
    grid = table.t().reshape(1, heads, side0, side0).float()
    grid = F.interpolate(grid, size=(side, side), mode='bicubic', align_corners=False)
    return grid.reshape(heads, side * side).t().to(table.dtype).contiguous()


def _shift_labels(n: int, win: int, shift: int, device) -> torch.Tensor:
    """Region label (0, 1, 2) of each row/column of a padded, shifted map of length ``n``."""
    idx = torch.arange(n, device=device)
    if shift == 0:
        return torch.zeros_like(idx)
    return (idx >= n - win).long() + (idx >= n - shift).long()


def shifted_window_mask(padded_hw: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int],
                        device=None, dtype=torch.float32) -> torch.Tensor:
    """(num_windows, n, n) additive mask (0 or SHIFT_MASK_VALUE) that keeps tokens rolled in from
    the opposite border of a padded (Hp, Wp) map from attending across that seam."""
    hp, wp = padded_hw
    wh, ww = window
    labels = (_shift_labels(hp, wh, shift[0], device)[:, None] * 3
              + _shift_labels(wp, ww, shift[1], device)[None, :])
    windows = labels.reshape(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    differs = windows[:, :, None] != windows[:, None, :]
    return torch.zeros(differs.shape, device=device, dtype=dtype).masked_fill(differs, SHIFT_MASK_VALUE)


@register_attention('swin_window')
class ShiftedWindowAttention(QKVMixer):
    """Swin's (shifted) window multi-head self-attention with a relative position bias, as a token
    mixer: ``mixer(x, hw, pad_mask)`` on the (B, H*W, C) tokens of an H x W map.

    Args:
        window_size: window side (7 in the released 224 models, 12 at 384).
        shift: shift the windows by ``window_size // 2`` (Swin's odd blocks).
        qkv_layout: 'qkv' (Swin's fused names, the default) or 'q_kv'.
        shift_first: roll the map *before* padding it to a multiple of the window, as timm's
            Swin does, instead of after (the official detection code and mmdet). Only matters
            where a shifted map is not a multiple of the window; for timm-trained weights.

    Batch padding (``pad_mask``, bottom/right as mmdet/mmseg pad): every image is attended over
    its own real map, with the window, shift, run-time padding and shift mask it gets alone
    (images of one valid size are processed together). Within an image, as in the official Swin,
    the zeros that pad its map to a multiple of the window take part in the window softmax.
    """
    takes_prefix_tokens = False

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: bool = False,
                 qkv_bias: bool = True, qkv_layout: str = 'qkv', proj_drop: float = 0.0,
                 attn_drop: float = 0.0, shift_first: bool = False):
        TokenMixer.__init__(self, dim, num_heads)
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f'window_size must be a positive int, got {window_size!r}')
        self.window_size = window_size
        self.shift = bool(shift)
        self.shift_size = window_size // 2 if shift else 0
        self.shift_first = bool(shift_first)
        # Parameter names follow the official checkpoints.
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1)**2, num_heads))
        # Not saved: it is a function of the window, and a saved one would not fit a resized table.
        self.register_buffer('relative_position_index', relative_position_index(window_size, window_size),
                             persistent=False)
        self.init_projections(qkv_bias, qkv_layout)
        self.attn_drop = attn_drop
        self.init_output(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def window_and_shift(self, hw: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """Run-time window and shift per dimension: a dimension no larger than the window is
        covered by one window and not shifted (the official rule, applied per dimension)."""
        w, s = self.window_size, self.shift_size
        # Not min(w, n): a comparison lets torch.export fix the window (a symbolic Min breaks the export).
        window = tuple(w if n >= w else n for n in hw)
        shift = tuple(s if n > w else 0 for n in hw)
        return window, shift

    def relative_position_bias(self, window: Tuple[int, int]) -> torch.Tensor:
        """(heads, n, n) bias for a (win_h, win_w) window (a shrunk window uses central offsets)."""
        if window == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:
            index = relative_position_index(*window, table_size=self.window_size,
                                            device=self.relative_position_bias_table.device)
        n = window[0] * window[1]
        bias = self.relative_position_bias_table[index.reshape(-1)].reshape(n, n, self.num_heads)
        return bias.permute(2, 0, 1)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if check_tokens(x, hw, pad_mask):
            raise ValueError('swin_window attention takes a plain token map without prefix tokens')
        # A BatchNorm projection (LeViT's 'bn_qkv') on batch statistics is no per-token map: its
        # statistics are taken over the batch's real tokens, not over windows or image groups.
        token_wise = self.qkv_layout == 'bn_qkv'
        qkv = batch_affine(self.qkv, x, pad_mask) if token_wise else None
        attend = functools.partial(self.attend, qkv=qkv, output=not token_wise)
        if pad_mask is None:
            y = attend(x, hw)
            return self.output(y) if token_wise else y
        # Windows, shift and shift mask depend on the map size, so an image is attended over its
        # own real map: the result it gets alone. Padded tokens' outputs are zero.
        y = per_image(attend, (x, ), hw, pad_mask)
        if token_wise:
            y = y.masked_scatter(~pad_mask[..., None], self.output(y[~pad_mask]))
        return y

    def attend(self, x: torch.Tensor, hw: Tuple[int, int], qkv=None, output: bool = True) -> torch.Tensor:
        """(Shifted) window attention over a whole (B, H*W, C) map (no batch padding); ``qkv``:
        (weight, bias) of the input projection for this batch, ``output``: apply ``proj`` here."""
        b, _, c = x.shape
        h, w = hw
        (wh, ww), (sh, sw) = self.window_and_shift(hw)
        grid = x.reshape(b, h, w, c)
        rolled = bool(sh or sw)
        if rolled and self.shift_first:
            grid = torch.roll(grid, shifts=(-sh, -sw), dims=(1, 2))
        pad_h, pad_w = -h % wh, -w % ww
        if pad_h or pad_w:
            grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if rolled and not self.shift_first:
            grid = torch.roll(grid, shifts=(-sh, -sw), dims=(1, 2))
        nwh, nww = hp // wh, wp // ww
        n = wh * ww
        windows = grid.reshape(b, nwh, wh, nww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)

        q, k, v = self.project_qkv(windows, qkv)  # (B*nW, h, n, d)
        bias = self.relative_position_bias((wh, ww)).to(q.dtype)  # (h, n, n)
        dropout = self.attn_drop if self.training else 0.0
        if rolled:
            mask = shifted_window_mask((hp, wp), (wh, ww), (sh, sw), device=x.device, dtype=q.dtype)
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)  # (nW, h, n, n)
            # One mask for every image: (B, nW, h, n, d) inputs against (nW, h, n, n).
            shape5 = (b, nwh * nww, self.num_heads, n, self.head_dim)
            q, k, v = q.reshape(shape5), k.reshape(shape5), v.reshape(shape5)
        if torch.compiler.is_exporting():
            # ONNX export: the softmax written out (ONNX's fused attention takes 4-D inputs only).
            y = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        y = y.reshape(-1, self.num_heads, n, self.head_dim)
        y = self.merge_heads(y)  # (B*nW, n, C)
        y = self.output(y) if output else y

        grid = y.reshape(b, nwh, nww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if rolled and not self.shift_first:
            grid = torch.roll(grid, shifts=(sh, sw), dims=(1, 2))
        grid = grid[:, :h, :w]
        if rolled and self.shift_first:
            grid = torch.roll(grid, shifts=(sh, sw), dims=(1, 2))
        return grid.reshape(b, h * w, c)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Official checkpoints save the index buffer; ours is derived. Tables trained with another
        # window (e.g. the 384 models' 12) are resized bicubically to this window.
        state_dict.pop(prefix + 'relative_position_index', None)
        key = prefix + 'relative_position_bias_table'
        table = state_dict.get(key)
        if table is not None and table.shape != self.relative_position_bias_table.shape \
                and table.dim() == 2 and table.shape[1] == self.num_heads:
            state_dict[key] = resize_relative_position_table(table, self.window_size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        extra = ', shift_first=True' if self.shift_first else ''
        return f'{super().extra_repr()}, window_size={self.window_size}, shift={self.shift}{extra}'
