"""Swin-family hierarchical backbone with the token mixer chosen per stage or per block.

A 4x4 patch embedding, then four stages ``layers.{s}`` of ``blocks.{b}``; stages 0-2 end with a
patch merging ``layers.{s}.downsample`` (2x2 neighbours concatenated, LayerNorm, linear 4C -> 2C),
as in the official Swin and InLine-Swin checkpoints, whose parameter names this class keeps.

Each block's token mixer is either Swin's shifted-window softmax attention (``'swin_window'``,
letter ``S``: windows of ``window_size`` with a learned relative position bias, shifted by half a
window on odd blocks) or any registered global attention -- InLine (``I``), Castling (``C``),
Armour (``A``) or ``'softmax'`` -- applied to the whole stage map without shifting. InLine-Swin-T
is ``attention=('I', 'I', 'I', 'S')``; ``('I', 2)`` in a stage means "the first two blocks InLine,
the rest shifted windows" (InLine-Swin-B's third stage).

Window attention at run-time sizes (detection / segmentation maps are rarely square or multiples
of the window): the map is zero-padded at the bottom/right to a multiple of the window, then
cyclically shifted, and the shift mask is computed for that padded size (the order of the official
Swin detection code and mmdet). Along a dimension where the map is not larger than the window,
the window shrinks to the map and that dimension is not shifted; on square maps this is exactly
the official rule ``min(H, W) <= window -> window = min(H, W), no shift``. A shrunk window uses
the matching central part of the relative position table (the same learned bias per offset).

timm differences worth knowing (see :func:`convert_timm_swin`): timm puts each patch merging at the
start of the next stage (``layers.{s+1}.downsample``), names the classifier ``head.fc``, fixes each
block's window and shift when it is built (from ``img_size``), and, where a map is not a multiple
of the window, shifts *before* padding, so its windows there differ from the official / mmdet ones.
``attn_cfgs=dict(swin_window=dict(shift_first=True))`` reproduces timm's order; with it (or on maps
that are multiples of the window) our stage outputs equal timm's to float rounding.
"""
import math
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..attention import ATTENTIONS
from ..attention.base import TokenMixer, check_tokens, register_attention
from ..registry import MODELS
from .common import (BackboneBase, Block, PatchEmbed, check_out_indices, init_transformer_weights,
                     per_stage)

# Logit added between tokens of different shift regions. The official code uses -100 (not -inf),
# so a fully masked row can never produce NaN; kept for bit-compatibility with its checkpoints.
SHIFT_MASK_VALUE = -100.0


# --------------------------------------------------------------------------------------------
# Shifted-window attention
# --------------------------------------------------------------------------------------------
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
class ShiftedWindowAttention(TokenMixer):
    """Swin's (shifted) window multi-head self-attention with a relative position bias, as a token
    mixer: ``mixer(x, hw, pad_mask)`` on the (B, H*W, C) tokens of an H x W map.

    Args:
        window_size: window side (7 in the released 224 models, 12 at 384).
        shift: shift the windows by ``window_size // 2`` (Swin's odd blocks).
        shift_first: roll the map *before* padding it to a multiple of the window, as timm's
            Swin does, instead of after (the official detection code and mmdet). Only matters
            where a shifted map is not a multiple of the window; for timm-trained weights.

    ``pad_mask`` is accepted and ignored: as in the official Swin, the zeros that pad a map to
    a multiple of the window take part in the window softmax, and so do batch-padding tokens.
    Full padding invariance for window attention is later work.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: bool = False,
                 qkv_bias: bool = True, qkv_layout: str = 'qkv', proj_drop: float = 0.0,
                 attn_drop: float = 0.0, shift_first: bool = False):
        super().__init__(dim, num_heads)
        if qkv_layout != 'qkv':
            raise ValueError(f"swin_window attention uses the fused 'qkv' layout, got {qkv_layout!r}")
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
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def window_and_shift(self, hw: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """Run-time window and shift per dimension: a dimension no larger than the window is
        covered by one window and not shifted (the official rule, applied per dimension)."""
        w, s = self.window_size, self.shift_size
        window = tuple(min(w, n) for n in hw)
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

        qkv = self.qkv(windows).reshape(-1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B*nW, h, n, d)
        bias = self.relative_position_bias((wh, ww)).to(q.dtype)  # (h, n, n)
        dropout = self.attn_drop if self.training else 0.0
        if rolled:
            mask = shifted_window_mask((hp, wp), (wh, ww), (sh, sw), device=x.device, dtype=q.dtype)
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)  # (nW, h, n, n)
            shape5 = (b, nwh * nww, self.num_heads, n, self.head_dim)
            y = F.scaled_dot_product_attention(q.reshape(shape5), k.reshape(shape5), v.reshape(shape5),
                                               attn_mask=bias, dropout_p=dropout)
            y = y.reshape(-1, self.num_heads, n, self.head_dim)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        y = self.proj_drop(self.proj(self.merge_heads(y)))  # (B*nW, n, C)

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


# --------------------------------------------------------------------------------------------
# Blocks, patch merging, the attention spec
# --------------------------------------------------------------------------------------------
class SwinBlock(Block):
    """The shared pre-norm block; also accepts (and drops) the official ``attn_mask`` buffer,
    which is computed at run time here for the actual map size."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + 'attn_mask', None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concatenate (in the official order (0,0), (1,0), (0,1), (1,1)
    as (row, col) offsets), LayerNorm(4C), Linear(4C, 2C, no bias). Odd maps are zero-padded."""

    def __init__(self, dim: int, out_dim: Optional[int] = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], pad_mask: Optional[torch.Tensor] = None):
        """(B, H*W, C) tokens [+ (B, H*W) token mask] -> tokens, new (h, w), new token mask."""
        b, _, c = x.shape
        h, w = hw
        grid = x.reshape(b, h, w, c)
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        h2, w2 = (h + pad_h) // 2, (w + pad_w) // 2
        # (B, h2, 2[row], w2, 2[col], C) -> (B, h2, w2, col, row, C): flattening the last three
        # gives the official concatenation order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], ...
        merged = grid.reshape(b, h2, 2, w2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h2 * w2, 4 * c)
        out = self.reduction(self.norm(merged))
        if pad_mask is not None:
            m = pad_mask.reshape(b, h, w)
            if pad_h or pad_w:
                m = F.pad(m, (0, pad_w, 0, pad_h), value=True)
            pad_mask = m.reshape(b, h2, 2, w2, 2).all(dim=4).all(dim=2).reshape(b, h2 * w2)
        return out, (h2, w2), pad_mask


class SwinStage(nn.Module):
    """``blocks`` then an optional ``downsample`` (patch merging feeding the next stage)."""

    def __init__(self, blocks: nn.ModuleList, downsample: Optional[PatchMerging]):
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample


# Letters of the attention spec; full registered names are accepted as well.
ATTENTION_LETTERS = {'I': 'inline', 'S': 'swin_window', 'C': 'castling', 'A': 'armour'}
ATTENTION_ALIASES = {'window': 'swin_window'}


def _attention_name(value) -> str:
    if isinstance(value, str):
        if value in ATTENTION_LETTERS:
            return ATTENTION_LETTERS[value]
        if value in ATTENTION_ALIASES:
            return ATTENTION_ALIASES[value]
        if value in ATTENTIONS:
            return value
    raise ValueError(f'unknown attention {value!r}; expected a letter of {sorted(ATTENTION_LETTERS)} '
                     f'({", ".join(f"{k}={v}" for k, v in ATTENTION_LETTERS.items())}) or a registered '
                     f'name of {sorted(set(ATTENTIONS) | set(ATTENTION_ALIASES))}')


def resolve_attention(spec, depths: Sequence[int]) -> Tuple[Tuple[str, ...], ...]:
    """Expand an attention spec to one registered name per block, per stage.

    ``spec``: one name/letter for every block; or one entry per stage, each a name/letter for
    the whole stage, ``(name, n)`` for "the first n blocks ``name``, the rest shifted windows",
    or a sequence of one name/letter per block.
    """
    num_stages = len(depths)
    if spec is None:
        raise ValueError("Swin needs an attention spec, e.g. attention=('I', 'I', 'I', 'S')")
    if isinstance(spec, str):
        return tuple((_attention_name(spec), ) * d for d in depths)
    spec = tuple(spec)
    if len(spec) != num_stages:
        raise ValueError(f'attention needs one entry per stage ({num_stages}), got {len(spec)}: {spec!r}')
    stages = []
    for i, (entry, depth) in enumerate(zip(spec, depths)):
        if isinstance(entry, str):
            stages.append((_attention_name(entry), ) * depth)
            continue
        entry = tuple(entry) if isinstance(entry, (list, tuple)) else entry
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], int) \
                and not isinstance(entry[1], bool):
            name, count = _attention_name(entry[0]), entry[1]
            if not 0 <= count <= depth:
                raise ValueError(f'attention entry {entry!r} of stage {i} asks for {count} blocks; '
                                 f'the stage has {depth}')
            stages.append((name, ) * count + ('swin_window', ) * (depth - count))
        elif isinstance(entry, tuple) and all(isinstance(e, str) for e in entry):
            if len(entry) != depth:
                raise ValueError(f'attention entry of stage {i} names {len(entry)} blocks; the stage '
                                 f'has depth {depth}: {entry!r}')
            stages.append(tuple(_attention_name(e) for e in entry))
        else:
            raise ValueError(f'attention entry of stage {i} must be a name, (name, count) or one name '
                             f'per block, got {entry!r}')
    return tuple(stages)


# --------------------------------------------------------------------------------------------
# Checkpoint conversion
# --------------------------------------------------------------------------------------------
DROPPED_BUFFERS = ('relative_position_index', 'attn_mask')


def is_timm_layout(state_dict: Dict[str, torch.Tensor]) -> bool:
    """timm's Swin keeps each patch merging at the start of the next stage (no layers.0.downsample)."""
    has_downsample = any(re.match(r'layers\.\d+\.downsample\.', k) for k in state_dict)
    return (has_downsample and not any(k.startswith('layers.0.downsample.') for k in state_dict)) \
        or 'head.fc.weight' in state_dict


def convert_timm_swin(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ``SwinTransformer`` state dict -> the official layout used here: ``layers.{s}.downsample``
    -> ``layers.{s-1}.downsample``, ``head.fc`` -> ``head``; non-persistent buffers dropped."""
    out = {}
    for key, value in state_dict.items():
        if key.rsplit('.', 1)[-1] in DROPPED_BUFFERS:
            continue
        key = re.sub(r'^layers\.(\d+)\.downsample\.',
                     lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', key)
        key = re.sub(r'^head\.fc\.', 'head.', key)
        out[key] = value
    return out


def _unwrap_checkpoint(checkpoint) -> Dict[str, torch.Tensor]:
    for name in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint, dict) and name in checkpoint and isinstance(checkpoint[name], dict):
            checkpoint = checkpoint[name]
    return dict(checkpoint)


# --------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------
SWIN_ARCHS = {
    't': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    's': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'b': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
# The released InLine-Swin attention layouts (METHODS.md).
INLINE_SWIN_ATTENTION = {
    't': ('I', 'I', 'I', 'S'),
    's': ('I', 'I', 'S', 'S'),
    'b': ('I', 'I', ('I', 2), 'S'),
}


@MODELS.register_module()
class Swin(BackboneBase):
    """Swin Transformer with the attention chosen per stage or per block.

    Args:
        arch: 't', 's' or 'b' (the released widths, depths and heads) or None to give
            ``embed_dims``, ``depths`` and ``num_heads`` yourself.
        attention: see :func:`resolve_attention`: e.g. ``'S'`` (plain Swin),
            ``('I', 'I', 'I', 'S')`` (InLine-Swin-T), ``('I', 'I', ('I', 2), 'S')`` (InLine-Swin-B),
            ``('castling', 'castling', 'castling', 'swin_window')``. Letters: I = inline,
            S = swin_window, C = castling, A = armour. Global mixers see the whole stage map,
            unshifted; softmax / armour there are quadratic in the map size.
        attn_cfgs: extra keyword arguments per attention name, e.g.
            ``dict(castling=dict(aux_softmax=True))``; they reach every block of that kind.
        window_size: window of the 'swin_window' blocks (7; 12 for the 384 models), one for
            all stages or one per stage. Checkpoint tables of another window are resized on load.
        embed_dims: width of stage 0; patch merging doubles it per stage.
        out_norm: a LayerNorm ``out_norm{i}`` on every returned map (as mmdet's Swin). The
            ImageNet models have one final ``norm`` instead, built here when ``num_classes > 0``.
        num_classes: > 0 adds the final ``norm`` and a ``head`` (ImageNet logits via
            :meth:`forward_classifier`).
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix=None)`` loads an official
            (InLine-)Swin or timm Swin checkpoint through :meth:`load_pretrained`.
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate: the usual backbone
            options. Stage ``i`` is the patch embedding (``i == 0``) or the patch merging that
            feeds it (``layers.{i-1}.downsample``), its blocks and its ``out_norm{i}``.
    """
    default_attention = None
    num_stages = 4

    def __init__(self, arch: Optional[str] = 't', attention=None, attn_cfgs: Optional[dict] = None,
                 embed_dims: Optional[int] = None, depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None, window_size: Union[int, Sequence[int]] = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, patch_size: int = 4, in_channels: int = 3,
                 drop_path_rate: float = 0.0, out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = False, num_classes: int = 0, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        n = self.num_stages
        if arch is not None and arch not in SWIN_ARCHS:
            raise ValueError(f'unknown Swin arch {arch!r}; expected one of {sorted(SWIN_ARCHS)} '
                             'or arch=None with explicit embed_dims, depths and num_heads')
        preset = SWIN_ARCHS.get(arch, {})
        embed_dims = embed_dims if embed_dims is not None else preset.get('embed_dims')
        depths = depths if depths is not None else preset.get('depths')
        num_heads = num_heads if num_heads is not None else preset.get('num_heads')
        if embed_dims is None or depths is None or num_heads is None:
            raise ValueError('arch=None needs embed_dims, depths and num_heads')
        if not isinstance(embed_dims, int) or embed_dims <= 0:
            raise ValueError(f'embed_dims must be a positive int (the stage-0 width), got {embed_dims!r}')
        depths = per_stage(depths, n, 'depths')
        num_heads = per_stage(num_heads, n, 'num_heads')
        window_sizes = per_stage(window_size, n, 'window_size')
        if any(not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f'depths must be positive ints, got {depths!r}')
        if frozen_stages >= n:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range; expected -1..{n - 1}')
        if attention is None:
            attention = self.default_attention_for(arch)
        block_attention = resolve_attention(attention, depths)
        attn_cfgs = dict(attn_cfgs or {})
        used = {name for stage in block_attention for name in stage}
        for key in attn_cfgs:
            if _attention_name(key) not in used:
                raise ValueError(f'attn_cfgs has an entry for {key!r}, which no block uses; '
                                 f'the blocks use {sorted(used)}')
        attn_cfgs = {_attention_name(k): v for k, v in attn_cfgs.items()}
        self.out_indices = check_out_indices(out_indices, n)
        self.embed_dims = tuple(embed_dims * 2**i for i in range(n))
        self.depths = depths
        self.block_attention = block_attention

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(n):
            dim = self.embed_dims[i]
            blocks = nn.ModuleList()
            for j, name in enumerate(block_attention[i]):
                cfg = dict(qkv_bias=qkv_bias, qkv_layout='qkv')
                if name == 'swin_window':
                    cfg.update(window_size=window_sizes[i], shift=j % 2 == 1)
                cfg.update(attn_cfgs.get(name, {}))
                blocks.append(SwinBlock(dim, num_heads[i], name, mlp_ratio=mlp_ratio,
                                        drop_path=dpr[sum(depths[:i]) + j], attn_cfg=cfg))
            downsample = PatchMerging(dim) if i < n - 1 else None
            self.layers.append(SwinStage(blocks, downsample))
        self.out_norm = out_norm
        if out_norm:
            for i in self.out_indices:
                setattr(self, f'out_norm{i}', nn.LayerNorm(self.embed_dims[i]))
        self.num_classes = num_classes
        if num_classes > 0:
            self.norm = nn.LayerNorm(self.embed_dims[-1])
            self.head = nn.Linear(self.embed_dims[-1], num_classes)
        else:
            self.norm = self.head = None
        self._init_default_weights()
        self._freeze_stages()

    @classmethod
    def default_attention_for(cls, arch: Optional[str]):
        return cls.default_attention

    def _init_default_weights(self):
        """The official initialisation: truncated-normal linears, unit LayerNorms."""
        init_transformer_weights(self)

    # ---------------------------------------------------------------- checkpoints
    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint, prefix: Optional[str] = None, strict: bool = False):
        """Load an official (InLine-)Swin or timm Swin checkpoint (a path/URL or a state dict).

        The checkpoint's ``relative_position_index`` / ``attn_mask`` buffers are dropped,
        relative-position tables of another window are resized, timm's layout is converted,
        ``norm`` / ``head`` are skipped when this model has none (``num_classes=0``) or the head
        has another class count. Returns ``(missing, unexpected)`` key lists (also logged).
        """
        if isinstance(checkpoint, str):
            from mmengine.runner.checkpoint import CheckpointLoader
            checkpoint = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state_dict = _unwrap_checkpoint(checkpoint)
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        state_dict = {(k[7:] if k.startswith('module.') else k): v for k, v in state_dict.items()}
        if is_timm_layout(state_dict):
            state_dict = convert_timm_swin(state_dict)
        own = {k: v.shape for k, v in self.state_dict().items()}
        skipped = [k for k in state_dict
                   if k.split('.', 1)[0] in ('norm', 'head') and own.get(k) != state_dict[k].shape]
        for key in skipped:
            del state_dict[key]
        result = self.load_state_dict(state_dict, strict=strict)
        print_log(f'Swin: loaded checkpoint; missing keys: {result.missing_keys}, unexpected keys: '
                  f'{result.unexpected_keys}, skipped: {skipped}', logger='current')
        return result.missing_keys, result.unexpected_keys

    # ---------------------------------------------------------------- stages
    def stage_modules(self, index: int):
        items = [self.patch_embed if index == 0 else self.layers[index - 1].downsample,
                 self.layers[index].blocks]
        if self.out_norm and index in self.out_indices:
            items.append(getattr(self, f'out_norm{index}'))
        return items

    def forward_stages(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Yield (tokens, (h, w), NCHW map to return) after every stage, in order."""
        if x.dim() != 4:
            raise ValueError(f'Swin expects images of shape (B, C, H, W), got {tuple(x.shape)}')
        if pad_mask is not None and pad_mask.shape != (x.shape[0], *x.shape[2:]):
            raise ValueError(f'pad_mask must have shape {(x.shape[0], *x.shape[2:])} (B, H, W), '
                             f'got {tuple(pad_mask.shape)}')
        tokens, hw, token_pad = self.patch_embed(x, pad_mask)
        for i, layer in enumerate(self.layers):
            if i:
                tokens, hw, token_pad = self.layers[i - 1].downsample(tokens, hw, token_pad)
            for block in layer.blocks:
                tokens = self.run_block(block, tokens, hw, token_pad)
            out = getattr(self, f'out_norm{i}')(tokens) if self.out_norm and i in self.out_indices \
                else tokens
            if token_pad is not None:
                # Padded positions leave each stage as zeros: what patch merging pads with when
                # the image runs alone.
                keep = ~token_pad.unsqueeze(-1)
                tokens, out = tokens * keep, out * keep
            b = tokens.shape[0]
            # Contiguous NCHW: mmcv's CPU RoIAlign misreads channels-last views.
            yield tokens, hw, out.transpose(1, 2).reshape(b, -1, *hw).contiguous()

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded] -> tuple of NCHW maps.

        The mask reaches every block as a token mask: global mixers (InLine, Castling, Armour,
        softmax) leave padded tokens out of their sums and means, and padded positions leave each
        stage as zeros. Shifted-window blocks accept and ignore it (as the official Swin), so only
        models without window blocks are fully invariant to batch padding.
        """
        last = max(self.out_indices)
        outs = []
        for i, (_, _, feat) in enumerate(self.forward_stages(x, pad_mask)):
            if i in self.out_indices:
                outs.append(feat)
            if i == last:
                break
        return tuple(outs)

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: last stage -> final norm -> mean over tokens -> head."""
        if self.head is None:
            raise RuntimeError('this Swin was built with num_classes=0 and has no classification head')
        *_, (tokens, _, _) = self.forward_stages(x)
        return self.head(self.norm(tokens).mean(dim=1))


def _replace_letter(spec, old: str, new: str):
    if isinstance(spec, str):
        return new if spec == old else spec
    return tuple(_replace_letter(e, old, new) if not isinstance(e, int) else e for e in spec)


@MODELS.register_module()
class InLineSwin(Swin):
    """The released InLine-Swin layouts: T ('I','I','I','S'), S ('I','I','S','S'),
    B ('I','I',('I',2),'S'); InLine blocks global and unshifted."""
    global_letter = 'I'

    @classmethod
    def default_attention_for(cls, arch):
        if arch not in INLINE_SWIN_ATTENTION:
            raise ValueError(f'{cls.__name__} with arch={arch!r} needs an explicit attention spec')
        return _replace_letter(INLINE_SWIN_ATTENTION[arch], 'I', cls.global_letter)


@MODELS.register_module()
class CastlingSwin(InLineSwin):
    """InLine-Swin's layout with Castling linear-angular attention in place of InLine."""
    global_letter = 'C'


@MODELS.register_module()
class ArmourSwin(InLineSwin):
    """InLine-Swin's layout with global Armour (W_Q = W_V softmax) attention in place of InLine.
    Global softmax is quadratic in the stage map: mind the memory at detection sizes."""
    global_letter = 'A'


@MODELS.register_module()
class SoftmaxSwin(Swin):
    """The plain Swin Transformer (shifted windows everywhere): the softmax baseline."""
    default_attention = 'S'


__all__ = [
    'Swin', 'InLineSwin', 'CastlingSwin', 'ArmourSwin', 'SoftmaxSwin', 'ShiftedWindowAttention',
    'PatchMerging', 'resolve_attention', 'convert_timm_swin', 'resize_relative_position_table',
    'relative_position_index', 'shifted_window_mask'
]
