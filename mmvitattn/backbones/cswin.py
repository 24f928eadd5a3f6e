"""CSWin-family hierarchical backbone with the token mixer chosen per stage.

A 7x7 stride-4 conv stem, then four stages separated by 3x3 stride-2 conv merges. Every block is
pre-norm: ``norm1`` -> a block-level ``qkv`` linear -> one or two attention branches (``attns``)
-> ``proj``, then ``norm2`` -> ``mlp``. Attribute names follow the released CSWin / InLine-CSwin
checkpoints (``stage1_conv_embed``, ``stage{i}``, ``merge{i}``, ``norm``, ``head``), so their
state dicts load without renaming.

Per-stage attention names:

- ``'cswin'``: cross-shaped window softmax attention with LePE (Dong et al., CVPR 2022), the
  mixing of :mod:`mmvitattn.attention.cswin` (``attns.0`` vertical, ``attns.1`` horizontal stripes
  of ``split_sizes[i]``; None: one branch over the whole map, CSWin's last stage). Stripes fit any
  map: the map is zero-padded up to a multiple of the stripe width at run time and the result
  cropped back (see "Reference followed").
- ``'inline'``: the InLine-CSwin variant (Han et al., NeurIPS 2024): the one
  :class:`~mmvitattn.attention.InLineAttention` with its LePE option, over the whole stage map, its
  dynamic kernel predicted from the token mean of the *block input* (before ``norm1``).
- any other attention registered in ``mmvitattn.attention`` (``'castling'``, ``'armour'``,
  ``'softmax'``, ...): a generic token mixer with its own projections under ``attn`` (no official
  checkpoint layout exists for these).

Batch padding (``pad_mask``) is honoured everywhere: padded tokens are never keys (stripes are laid
over each image's own map), are zeroed before every LePE / dynamic conv and every merge, and take no
part in any mean, so a real image gets the same features alone or padded inside a batch.

Reference followed: CSWin (microsoft/CSWin-Transformer, ``models/cswin.py``; for sizes that are not
a multiple of the stripe width, which the classification code never accepts, its segmentation
backbone ``segmentation/backbone/cswin_transformer.py``) and the released InLine-CSwin
(LeapLabTHU/InLine, ``models/inline_cswin.py``):

- stripe widths ``split_size=[1, 2, 7, 7]`` at 224 (``[1, 2, 12, 12]`` at 384); the last stage
  (and any stage whose map equals the stripe width) is one branch over the whole map. InLine stages
  use ``la_split_size`` 56-28-14-7 (96-48-24-12 at 384), i.e. the whole stage map: global here.
- maps that are not a multiple of the stripe width (e.g. stage 3 at 512 x 512, 32 x 32 with
  stripes of 7): the segmentation code pads the projected q, k, v with zeros split equally between
  both sides (top/left the smaller half) and lets the zeros take part in the softmax as keys; that is
  the default (``attn_cfgs=dict(stripe_padding='center')``). ``stripe_padding='end'`` pads at the
  bottom/right and masks the zeros out instead, so the last stripe is just narrower.
- LayerNorm eps 1e-5 everywhere (PyTorch's default, as released); the 7x7 / 4 / padding 2 conv
  stem and 3x3 / 2 / padding 1 merges, each followed by a LayerNorm; GELU MLPs; drop path rising
  linearly over all blocks; the classifier: final norm, token mean, head. Sizes that are not a
  multiple of 4 are zero-padded up before the stem, giving ceil(H / 4) rows (the segmentation
  stem gives one row fewer for a remainder of 1 or 2 pixels; the classification stem accepts the
  training size only).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from timm.layers import DropPath
from torch import nn

from ..attention import ATTENTIONS, InLineAttention, build_attention
from ..attention.cswin import LePEAttention, cross_shaped_mix, stripe_branches  # noqa: F401
from ..attention.base import check_heads
from ..registry import MODELS
from .attention_spec import constructor_options, mixer_options, resolve_attention, resolve_attn_cfgs, stage_summary
from ..padding import PAD_MASK_ATTR, downsample_pad_mask, pad_to_multiple, tokens_to_map
from .common import (BackboneBase, Mlp, check_out_indices, init_transformer_weights,
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


def cswin_mixer_options(name: str):
    """Options a CSwin block's mixer takes: the released layouts' branches take only ``proj_drop``
    (and the stripes ``stripe_padding``)."""
    if name in NATIVE_ATTENTIONS:
        return frozenset({'proj_drop', 'stripe_padding'} if name == 'cswin' else {'proj_drop'})
    return constructor_options(name)
class InLineLePEAttention(InLineAttention):
    """InLine-CSwin's branch: the one :class:`~mmvitattn.attention.InLineAttention` with its
    options ``lepe`` (CSWin's static LePE conv ``get_v`` on V) and ``projections=False`` (the
    block holds ``qkv`` and ``proj``); the kernel is predicted from ``x_mean``, the token mean of
    the *block input*. Called with the block's projected q, k, v (B, H*W, C)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__(dim, num_heads, lepe=True, projections=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Tuple[int, int],
                x_mean: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.mix(q, k, v, hw, x_mean, pad_mask)


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
            stripe_padding = attn_cfg.pop('stripe_padding', 'center') if attention == 'cswin' else None
            if attn_cfg:
                allowed = "'proj_drop', 'stripe_padding'" if attention == 'cswin' else "'proj_drop'"
                raise ValueError(f'unknown options {sorted(attn_cfg)} for {attention!r} attention; '
                                 f'expected only {allowed}')
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.norm1 = nn.LayerNorm(dim)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)
            if attention == 'inline':
                self.attns = nn.ModuleList([InLineLePEAttention(dim, num_heads)])
            else:
                self.attns = stripe_branches(dim, num_heads, split_size, stripe_padding)
        else:
            self.norm1 = nn.LayerNorm(dim)
            self.attn = build_attention(attention, dim, num_heads,
                                        **mixer_options(attention, dict(qkv_bias=qkv_bias), attn_cfg))
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
        else:
            y = cross_shaped_mix(self.attns, q, k, v, hw, pad_mask)
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
        x, pad_mask = pad_to_multiple(x, pad_mask, 4)
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
        token_pad = downsample_pad_mask(pad_mask, hw, 2)
        return self.norm(x.flatten(2).transpose(1, 2)), hw, token_pad


@MODELS.register_module()
class CSwin(BackboneBase):
    """Args:
        arch: 't', 's' or 'b' (sizes from ``arch_zoo``: CSWin's for this class and
            ``SoftmaxCSwin``, InLine-CSwin's for ``InLineCSwin``), or None to give ``embed_dims``,
            ``depths`` and ``num_heads`` yourself. Explicit values override the arch's.
        attention: 'cswin', 'inline', another registered attention name, or one per stage (or
            block); the grammar of :mod:`~mmvitattn.backbones.attention_spec`.
        attn_cfgs: mixer options, one dict for all stages or one per stage (or block).
        embed_dims: stage-1 width (doubled at every merge) or four widths.
        split_sizes: stripe width of 'cswin' stages; None for one branch over the whole map.
            The released models use (1, 2, 7, None) at 224 and (1, 2, 12, None) at 384. Stripes
            are padded as the official segmentation code pads them (``stripe_padding`` in
            ``attn_cfgs``, see the module docstring).
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
        given = self.resolve_arch(arch, dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads))
        embed_dims = given['embed_dims']
        if isinstance(embed_dims, int):
            embed_dims = tuple(embed_dims * 2**i for i in range(n))
        embed_dims = per_stage(embed_dims, n, 'embed_dims')
        depths = per_stage(given['depths'], n, 'depths')
        num_heads = per_stage(given['num_heads'], n, 'num_heads')
        split_sizes = per_stage(split_sizes, n, 'split_sizes')
        for i, depth in enumerate(depths):
            if not isinstance(depth, int) or depth < 1:
                raise ValueError(f'depths[{i}]={depth!r} must be a positive int')
        known = sorted(set(NATIVE_ATTENTIONS) | set(ATTENTIONS))
        block_attention = resolve_attention(attention or self.default_attention, depths, known,
                                            owner=type(self).__name__)
        block_cfgs = resolve_attn_cfgs(attn_cfgs, block_attention, known, options=cswin_mixer_options)
        for i, (names, split) in enumerate(zip(block_attention, split_sizes)):
            if 'cswin' in names and split is not None and (not isinstance(split, int) or split < 1):
                raise ValueError(f'split_sizes[{i}]={split!r} must be a positive int or None (whole map)')
        self.check_frozen_stages(n - 1)
        self.out_indices = check_out_indices(out_indices, n)
        self.embed_dims = embed_dims
        self.attention = stage_summary(block_attention)
        self.split_sizes = split_sizes
        self.in_channels = in_channels

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stage1_conv_embed = ConvStem(in_channels, embed_dims[0])
        for i in range(n):
            if i:
                setattr(self, f'merge{i}', MergeBlock(embed_dims[i - 1], embed_dims[i]))
            start = sum(depths[:i])
            setattr(self, f'stage{i + 1}', nn.ModuleList([
                CSwinBlock(embed_dims[i], num_heads[i], name, split_size=split_sizes[i],
                           mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[start + j],
                           attn_cfg=block_cfgs[i][j])
                for j, name in enumerate(block_attention[i])
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
            # Padded positions leave each stage as zeros, which is what the next merge conv sees
            # as its zero padding when the image runs alone; the map carries its mask.
            grid = tokens_to_map(tokens, hw, token_pad)
            grid_pad = getattr(grid, PAD_MASK_ATTR, None)
            yield tokens, tokens_to_map(out, hw, token_pad)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded] -> tuple of NCHW maps
        at strides 4, 8, 16, 32 (sizes ceil(H/s) x ceil(W/s)). Without ``pad_mask`` the mask our
        data preprocessors attach to ``x`` is used (if any)."""
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        return self.select_outputs(feat for _, feat in self.forward_stages(x, pad_mask))

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-style logits: last stage -> ``norm`` -> token mean -> ``head``."""
        self.check_head()
        self.resolve_pad_mask(x)  # the input check of forward
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
