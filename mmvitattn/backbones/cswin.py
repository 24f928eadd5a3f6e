"""CSWin-family hierarchical backbone with the token mixer chosen per stage.

A 7x7 stride-4 conv stem, then four stages separated by 3x3 stride-2 conv merges. Every block is
pre-norm: ``norm1`` -> a block-level ``qkv`` linear -> one or two attention branches (``attns``)
-> ``proj``, then ``norm2`` -> ``mlp``. Attribute names follow the released CSWin / InLine-CSwin
checkpoints (``stage1_conv_embed``, ``stage{i}``, ``merge{i}``, ``norm``, ``head``), so their
state dicts load without renaming.

Per-stage attention names:

- ``'cswin'``: cross-shaped window softmax attention (Dong et al., CVPR 2022). The heads are split
  in two halves; the first half (``attns.0``) attends inside vertical stripes (the full map height,
  ``split_size`` columns wide), the second (``attns.1``) inside horizontal stripes (``split_size``
  rows high, the full map width). Each branch adds LePE, a 3x3 depthwise conv (``get_v``) of V
  applied inside each stripe. With ``split_size=None`` the stage has one branch with all heads over
  the whole map (CSWin's last stage). Stripes fit any map: the map is padded up to a multiple of the
  stripe width at run time, padded keys are masked out, and the result is cropped back, which gives
  exactly what the last, narrower stripe would give on its own.
- ``'inline'``: the InLine-CSwin variant (Han et al., NeurIPS 2024): one branch of global InLine
  attention over the whole stage map that keeps CSWin's static LePE conv ``get_v`` on V and adds the
  dynamic 3x3 depthwise conv whose kernel ``residual`` predicts from the token mean of the *block
  input* (before ``norm1``).
- any other attention registered in ``mmvitattn.attention`` (``'castling'``, ``'armour'``,
  ``'softmax'``, ...): a generic token mixer with its own projections under ``attn`` (no official
  checkpoint layout exists for these).

Batch padding (``pad_mask``) is honoured everywhere: padded tokens are never keys, are zeroed before
every LePE / dynamic conv and every merge, and take no part in any mean, so a real image gets the
same features alone or padded inside a batch.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ..attention import ATTENTIONS, build_attention
from ..attention.base import check_heads, float32_region, to_float32
from ..registry import MODELS
from .common import (BackboneBase, Mlp, check_out_indices, downsample_pad_mask, init_transformer_weights,
                     per_stage)

# Sizes of the original CSWin Transformer (softmax): CSWin-T/S/B.
CSWIN_ARCHS = {
    't': dict(embed_dims=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16)),
    's': dict(embed_dims=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16)),
    'b': dict(embed_dims=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32)),
}
# Sizes of the released InLine-CSwin models (depths changed to keep the FLOPs of CSWin).
INLINE_CSWIN_ARCHS = {
    't': dict(embed_dims=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16)),
    's': dict(embed_dims=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16)),
    'b': dict(embed_dims=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32)),
}
NATIVE_ATTENTIONS = ('cswin', 'inline')
STRIPE_MODES = ('vertical', 'horizontal', 'global')


def to_windows(t: torch.Tensor, hw: Tuple[int, int], window: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) row-major map -> (B * windows, wh * ww, C); zero-padded up to whole windows."""
    b, _, c = t.shape
    h, w = hw
    wh, ww = window
    pad_h, pad_w = -h % wh, -w % ww
    grid = t.reshape(b, h, w, c)
    if pad_h or pad_w:
        grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
    nh, nw = (h + pad_h) // wh, (w + pad_w) // ww
    grid = grid.reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(b * nh * nw, wh * ww, c)


def from_windows(t: torch.Tensor, batch: int, hw: Tuple[int, int], window: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_windows`, cropping the padding: -> (B, H*W, C)."""
    h, w = hw
    wh, ww = window
    nh, nw = -(-h // wh), -(-w // ww)
    c = t.shape[-1]
    grid = t.reshape(batch, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, nh * wh, nw * ww, c)
    return grid[:, :h, :w].reshape(batch, h * w, c)


def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, h, N, C/h)."""
    b, n, c = t.shape
    return t.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, h, N, d) -> (B, N, h*d)."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


class LePEAttention(nn.Module):
    """One CSWin branch: softmax attention inside stripes (or the whole map) plus LePE.

    Operates on already projected q, k, v of shape (B, H*W, dim) (this branch's channel share).
    ``mode``: 'vertical' (windows H x split_size), 'horizontal' (split_size x W) or 'global' (H x W).
    """

    def __init__(self, dim: int, num_heads: int, mode: str, split_size: Optional[int] = None):
        super().__init__()
        if mode not in STRIPE_MODES:
            raise ValueError(f'unknown stripe mode {mode!r}; expected one of {STRIPE_MODES}')
        if mode != 'global' and (not isinstance(split_size, int) or split_size < 1):
            raise ValueError(f'{mode} stripes need a positive int split_size, got {split_size!r}')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.mode = mode
        self.split_size = split_size
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def window_shape(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        h, w = hw
        if self.mode == 'vertical':
            return h, self.split_size
        if self.mode == 'horizontal':
            return self.split_size, w
        return h, w

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = q.shape
        window = self.window_shape(hw)
        wh, ww = window
        runtime_pad = (-hw[0] % wh) or (-hw[1] % ww)
        key_ok = None
        if pad_mask is not None or runtime_pad:
            real = q.new_ones(b, n, 1) if pad_mask is None else (~pad_mask).to(q.dtype).unsqueeze(-1)
            v = v * real if pad_mask is not None else v  # LePE sees zeros where there is no token
            key_ok = to_windows(real, hw, window)[..., 0] > 0.5  # (B', L)
            # A window made only of padding: let it attend to itself; its queries are discarded
            # (cropped or padded tokens), and this keeps NaN out of the padded positions.
            key_ok = key_ok | ~key_ok.any(dim=-1, keepdim=True)
            key_ok = key_ok[:, None, None, :]
        qw, kw, vw = (to_windows(t, hw, window) for t in (q, k, v))
        nwin = vw.shape[0]
        lepe = self.get_v(vw.transpose(1, 2).reshape(nwin, c, wh, ww)).reshape(nwin, c, wh * ww)
        y = F.scaled_dot_product_attention(split_heads(qw, self.num_heads), split_heads(kw, self.num_heads),
                                           split_heads(vw, self.num_heads), attn_mask=key_ok)
        y = merge_heads(y) + lepe.transpose(1, 2)
        return from_windows(y, b, hw, window)

    def extra_repr(self) -> str:
        split = '' if self.mode == 'global' else f', split_size={self.split_size}'
        return f'dim={self.dim}, num_heads={self.num_heads}, mode={self.mode}{split}'


class InLineLePEAttention(nn.Module):
    """InLine-CSwin branch: global InLine attention + static LePE conv + dynamic local residual.

    out_i = s q_i (K^T V / N - mean(k)^T mean(v)) + mean(v) + get_v(V)_i + dyn(V)_i, where dyn is a
    3x3 depthwise conv whose per-image kernel ``residual`` predicts from ``x_mean``, the token
    mean of the block input. Means are over real (unpadded) tokens only.
    """
    kernel_size = 3

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.scale = self.head_dim**-0.5
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.residual = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size=1, groups=num_heads),
            nn.GELU(),
            nn.Conv1d(dim, dim * self.kernel_size**2, kernel_size=1, groups=num_heads))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Tuple[int, int],
                x_mean: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = q.shape
        h, w = hw
        if pad_mask is None:
            count = n  # not float(n): under torch.export N stays symbolic, not the traced value
        else:
            real = (~pad_mask).to(q.dtype).unsqueeze(-1)  # (B, N, 1)
            k, v = k * real, v * real
            count = real.sum(dim=1, keepdim=True).clamp_min(1).unsqueeze(1)  # (B, 1, 1, 1)
        grid = v.transpose(1, 2).reshape(b, c, h, w)
        kernels = self.residual(x_mean.unsqueeze(-1)).reshape(b * c, 1, self.kernel_size, self.kernel_size)
        dynamic = F.conv2d(grid.reshape(1, b * c, h, w), kernels, padding=self.kernel_size // 2, groups=b * c)
        local = (self.get_v(grid) + dynamic.reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        with float32_region(q):  # sums over all N tokens: float32 under float16/bfloat16 autocast
            q, k, v = to_float32(q, k, v)
            count = count if not isinstance(count, torch.Tensor) else count.to(q.dtype)
            k_mean = k.sum(dim=2, keepdim=True) / count
            v_mean = v.sum(dim=2, keepdim=True) / count
            kv = k.transpose(-2, -1) @ v / count - k_mean.transpose(-2, -1) @ v_mean  # (B, h, d, d)
            y = merge_heads((q * self.scale) @ kv + v_mean)
        return y.to(local.dtype) + local

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}'


class CSwinBlock(nn.Module):
    """Pre-norm CSWin block. Native attentions ('cswin', 'inline') keep the released layout
    (block-level ``qkv`` and ``proj``, branches in ``attns``); others are a generic ``attn`` mixer."""

    def __init__(self, dim: int, num_heads: int, attention: str, split_size: Optional[int] = None,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 attn_cfg: Optional[dict] = None):
        super().__init__()
        check_heads(dim, num_heads)
        attn_cfg = dict(attn_cfg or {})
        self.attention = attention
        if attention in NATIVE_ATTENTIONS:
            proj_drop = attn_cfg.pop('proj_drop', 0.0)
            if attn_cfg:
                raise ValueError(f'unknown options {sorted(attn_cfg)} for {attention!r} attention; '
                                 "expected only 'proj_drop'")
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.norm1 = nn.LayerNorm(dim)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)
            if attention == 'inline':
                branches = [InLineLePEAttention(dim, num_heads)]
            elif split_size is None:
                branches = [LePEAttention(dim, num_heads, 'global')]
            else:
                if num_heads % 2:
                    raise ValueError(f'stripe attention splits the heads into two halves; num_heads={num_heads} '
                                     f'(width {dim}) must be even, or use split_size=None')
                branches = [LePEAttention(dim // 2, num_heads // 2, mode, split_size)
                            for mode in ('vertical', 'horizontal')]
            self.attns = nn.ModuleList(branches)
        else:
            self.norm1 = nn.LayerNorm(dim)
            self.attn = build_attention(attention, dim, num_heads, **{'qkv_bias': qkv_bias, **attn_cfg})
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def mix(self, x: torch.Tensor, hw: Tuple[int, int], pad_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The attention half of the block (without the residual connection)."""
        y = self.norm1(x)
        if self.attention not in NATIVE_ATTENTIONS:
            return self.attn(y, hw, pad_mask)
        q, k, v = self.qkv(y).chunk(3, dim=-1)
        if self.attention == 'inline':
            if pad_mask is None:
                x_mean = x.mean(dim=1)
            else:
                real = (~pad_mask).to(x.dtype).unsqueeze(-1)
                x_mean = (x * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)
            y = self.attns[0](q, k, v, hw, x_mean, pad_mask)
        elif len(self.attns) == 1:
            y = self.attns[0](q, k, v, hw, pad_mask)
        else:
            half = x.shape[-1] // 2
            y = torch.cat([
                branch(q[..., s], k[..., s], v[..., s], hw, pad_mask)
                for branch, s in zip(self.attns, (slice(None, half), slice(half, None)))
            ], dim=-1)
        return self.proj_drop(self.proj(y))

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = hw
        if h * w != x.shape[1]:
            raise ValueError(f'token map {h}x{w} does not match {x.shape[1]} tokens')
        x = x + self.drop_path(self.mix(x, hw, pad_mask))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class ConvStem(nn.Sequential):
    """``stage1_conv_embed``: conv 7x7 stride 4 padding 2 (index 0), flatten to tokens (1),
    LayerNorm (2). The input is zero-padded up to a multiple of 4 first, so any H x W gives a
    ceil(H/4) x ceil(W/4) map and no pixel is dropped."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__(nn.Conv2d(in_channels, dim, 7, stride=4, padding=2), nn.Flatten(2), nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        extra_h, extra_w = -x.shape[2] % 4, -x.shape[3] % 4
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h))
            if pad_mask is not None:
                pad_mask = F.pad(pad_mask, (0, extra_w, 0, extra_h), value=True)
        x = self[0](x)
        hw = (x.shape[2], x.shape[3])
        return self[2](self[1](x).transpose(1, 2)), hw, downsample_pad_mask(pad_mask, hw, 4)


class MergeBlock(nn.Module):
    """``merge{i}``: conv 3x3 stride 2 padding 1 then LayerNorm; H x W -> ceil(H/2) x ceil(W/2).
    An output token counts as padding when the input token at its kernel centre is padding."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, grid: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """(B, C, H, W) [+ (B, H, W) token mask] -> tokens (B, N, C'), (h, w), token mask (B, N)."""
        x = self.conv(grid)
        hw = (x.shape[2], x.shape[3])
        token_pad = None if pad_mask is None else pad_mask[:, ::2, ::2].flatten(1)
        return self.norm(x.flatten(2).transpose(1, 2)), hw, token_pad


@MODELS.register_module()
class CSwin(BackboneBase):
    """Args:
        arch: 't', 's' or 'b' (sizes from ``arch_zoo``: CSWin's for this class and
            ``SoftmaxCSwin``, InLine-CSwin's for ``InLineCSwin``), or None to give ``embed_dims``,
            ``depths`` and ``num_heads`` yourself. Explicit values override the arch's.
        attention: 'cswin', 'inline', another registered attention name, or one per stage.
        attn_cfgs: extra keyword arguments for the attention, one dict for all stages or one per stage.
        embed_dims: stage-1 width (doubled at every merge) or four widths.
        split_sizes: stripe width of 'cswin' stages; None for one branch over the whole map.
            The released models use (1, 2, 7, None) at 224 and (1, 2, 12, None) at 384.
        out_norm: a LayerNorm (``out_norm{i}``) on every returned map (the released models have
            one ``norm`` on the last stage only, used by the classifier).
        num_classes: > 0 adds the ImageNet classifier: ``norm`` on the last stage, token mean, ``head``.
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate: the usual backbone options.
            Stage 0 is the stem and ``stage1``; stage i > 0 is ``merge{i}`` and ``stage{i+1}``.
    """
    arch_zoo = CSWIN_ARCHS
    default_attention: Union[str, Sequence[str], None] = None
    num_stages = 4

    def __init__(self, arch: Optional[str] = 't', attention: Union[str, Sequence[str], None] = None,
                 attn_cfgs: Union[dict, Sequence[dict], None] = None,
                 embed_dims: Union[int, Sequence[int], None] = None, depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 split_sizes: Sequence[Optional[int]] = (1, 2, 7, None), mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, in_channels: int = 3, drop_path_rate: float = 0.0,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = False, num_classes: int = 0,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        n = self.num_stages
        if arch is None:
            settings = {}
        elif arch in self.arch_zoo:
            settings = self.arch_zoo[arch]
        else:
            raise ValueError(f'unknown {type(self).__name__} arch {arch!r}; expected one of '
                             f'{sorted(self.arch_zoo)} or arch=None with explicit sizes')
        given = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        for key, value in given.items():
            if value is None:
                if key not in settings:
                    raise ValueError(f'arch=None needs an explicit {key}')
                given[key] = settings[key]
        embed_dims = given['embed_dims']
        if isinstance(embed_dims, int):
            embed_dims = tuple(embed_dims * 2**i for i in range(n))
        embed_dims = per_stage(embed_dims, n, 'embed_dims')
        depths = per_stage(given['depths'], n, 'depths')
        num_heads = per_stage(given['num_heads'], n, 'num_heads')
        split_sizes = per_stage(split_sizes, n, 'split_sizes')
        attention = per_stage(attention or self.default_attention, n, 'attention')
        attn_cfgs = per_stage(attn_cfgs, n, 'attn_cfgs')
        allowed = sorted(set(NATIVE_ATTENTIONS) | set(ATTENTIONS))
        for name in attention:
            if name is None:
                raise ValueError(f'{type(self).__name__} needs attention=<name> or one name per stage; '
                                 f'expected names from {allowed}')
            if name not in allowed:
                raise ValueError(f'unknown attention type {name!r}; expected one of {allowed}')
        for i, (name, split) in enumerate(zip(attention, split_sizes)):
            if name == 'cswin' and split is not None and (not isinstance(split, int) or split < 1):
                raise ValueError(f'split_sizes[{i}]={split!r} must be a positive int or None (whole map)')
        for i, depth in enumerate(depths):
            if not isinstance(depth, int) or depth < 1:
                raise ValueError(f'depths[{i}]={depth!r} must be a positive int')
        if not -1 <= frozen_stages < n:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range; expected -1..{n - 1}')
        self.out_indices = check_out_indices(out_indices, n)
        self.embed_dims = embed_dims
        self.attention = attention
        self.split_sizes = split_sizes
        self.in_channels = in_channels

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stage1_conv_embed = ConvStem(in_channels, embed_dims[0])
        for i in range(n):
            if i:
                setattr(self, f'merge{i}', MergeBlock(embed_dims[i - 1], embed_dims[i]))
            start = sum(depths[:i])
            setattr(self, f'stage{i + 1}', nn.ModuleList([
                CSwinBlock(embed_dims[i], num_heads[i], attention[i], split_size=split_sizes[i],
                           mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[start + j],
                           attn_cfg=attn_cfgs[i])
                for j in range(depths[i])
            ]))
        self.num_classes = num_classes
        if num_classes > 0:
            self.norm = nn.LayerNorm(embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], num_classes)
        else:
            self.norm = self.head = None
        self.out_norm = out_norm
        if out_norm:
            for i in self.out_indices:
                setattr(self, f'out_norm{i + 1}', nn.LayerNorm(embed_dims[i]))
        self._init_default_weights()
        self._freeze_stages()

    def _init_default_weights(self):
        # As the released code: truncated-normal linears, unit LayerNorms, PyTorch's default convs.
        init_transformer_weights(self)

    def stage_modules(self, index: int):
        items = [self.stage1_conv_embed if index == 0 else getattr(self, f'merge{index}'),
                 getattr(self, f'stage{index + 1}')]
        if self.out_norm and index in self.out_indices:
            items.append(getattr(self, f'out_norm{index + 1}'))
        return items

    def forward_stages(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Yield (last tokens (B, N, C), NCHW map to return) for every stage, in order."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects images of shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f'input of size {tuple(x.shape[2:])} is empty')
        if pad_mask is not None and tuple(pad_mask.shape) != (x.shape[0], *x.shape[2:]):
            raise ValueError(f'pad_mask must have shape {(x.shape[0], *x.shape[2:])} (B, H, W), '
                             f'got {tuple(pad_mask.shape)}')
        b = x.shape[0]
        grid = grid_pad = None
        for i in range(self.num_stages):
            if i == 0:
                tokens, hw, token_pad = self.stage1_conv_embed(x, pad_mask)
            else:
                tokens, hw, token_pad = getattr(self, f'merge{i}')(grid, grid_pad)
            for block in getattr(self, f'stage{i + 1}'):
                tokens = self.run_block(block, tokens, hw, token_pad)
            out = tokens
            if self.out_norm and i in self.out_indices:
                out = getattr(self, f'out_norm{i + 1}')(tokens)  # on the output only, not the next stage
            if token_pad is not None:
                # Padded positions leave each stage as zeros, which is what the next merge conv
                # sees as its zero padding when the image runs alone.
                keep = ~token_pad.unsqueeze(-1)
                tokens, out = tokens * keep, out * keep
                grid_pad = token_pad.reshape(b, *hw)
            grid = tokens.transpose(1, 2).reshape(b, -1, *hw)
            # Contiguous NCHW: mmcv's CPU RoIAlign silently misreads channels-last views.
            yield tokens, out.transpose(1, 2).reshape(b, -1, *hw).contiguous()

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded] -> tuple of NCHW maps
        at strides 4, 8, 16, 32 (sizes ceil(H/s) x ceil(W/s)). Without ``pad_mask`` the mask our
        data preprocessors attach to ``x`` is used (if any)."""
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        return self.select_outputs(feat for _, feat in self.forward_stages(x, pad_mask))

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-style logits: last stage -> ``norm`` -> token mean -> ``head``."""
        self.check_head()
        *_, (tokens, _) = self.forward_stages(x)
        return self.head(self.norm(tokens).mean(dim=1))


@MODELS.register_module()
class InLineCSwin(CSwin):
    """The released InLine-CSwin models: InLine (+ LePE) in stages 1-2, CSWin stripes in 3-4."""
    arch_zoo = INLINE_CSWIN_ARCHS
    default_attention = ('inline', 'inline', 'cswin', 'cswin')


@MODELS.register_module()
class SoftmaxCSwin(CSwin):
    """The original CSWin Transformer: cross-shaped window softmax attention with LePE everywhere."""
    default_attention = 'cswin'
