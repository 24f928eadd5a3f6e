"""ViTDet's simple feature pyramid (Li et al., ECCV 2022): a plain backbone's single map -> a
multi-scale pyramid, each level made by 2x transposed convs (up), the identity, or a 2x max-pool
(down), then a LayerNorm over channels. Registered as ``mmvitattn.SimpleFeaturePyramid``; the plain
ViT's ``out_type='simple_pyramid'`` builds the same operations inside the backbone.

Padding-aware: the backbone's map carries its padding mask (:func:`mmvitattn.padding.tokens_to_map`
attaches it), a max-pool never sees the zeros beyond an image's border (alone, ceil-mode pooling
clips its last window there), and padded positions of every level are zero, so an image gets the
pyramid it gets alone.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from ..padding import PAD_MASK_ATTR, attach_pad_mask, downsample_pad_mask, strided_size
from ..registry import MODELS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map; returns contiguous NCHW memory."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


def build_rescale(scale: float, in_channels: int, out_channels: int) -> nn.Module:
    """The op taking a stride-p map to stride p/scale: 2x transposed convs up (LN2d + GELU between
    two of them), identity, or 2x max-pool down; a 1x1 conv where only the width must change."""
    if scale == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2), LayerNorm2d(out_channels, eps=1e-6),
            nn.GELU(), nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2))
    if scale == 2:
        return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2))
    width = [nn.Conv2d(in_channels, out_channels, 1)] if in_channels != out_channels else []
    if scale == 1:
        return nn.Sequential(*width) if width else nn.Identity()
    if scale == 0.5:
        # ceil_mode: an odd stride-p map still gives the ceil(h / 2) rows FPN expects.
        return nn.Sequential(nn.MaxPool2d(2, stride=2, ceil_mode=True), *width)
    raise ValueError(f'unsupported rescale factor {scale!r}; expected one of 4, 2, 1, 0.5')


def scaled_pad(grid_pad: torch.Tensor, scale: float) -> torch.Tensor:
    """A (B, h, w) padding mask carried to a level ``scale`` times finer (4, 2, 1 or 0.5)."""
    if scale == 1:
        return grid_pad
    if scale > 1:
        s = int(scale)
        return grid_pad.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
    hw = strided_size(tuple(grid_pad.shape[1:]), 2)
    return downsample_pad_mask(grid_pad, hw, 2).reshape(-1, *hw)


def rescale_level(op: nn.Module, scale: float, feat: torch.Tensor, grid_pad: Optional[torch.Tensor],
                  norm: Optional[nn.Module] = None) -> torch.Tensor:
    """One pyramid level from the map ``feat`` (padding ``grid_pad`` (B, h, w) or None), with its
    padded positions zero and its mask attached."""
    if grid_pad is not None and scale < 1:
        pool, *width = op
        feat = pool(feat.masked_fill(grid_pad[:, None], float('-inf')))
        feat = feat.masked_fill(scaled_pad(grid_pad, scale)[:, None], 0.0)
        for layer in width:  # the 1x1 conv after the pool sees no -inf (no NaN in its gradient)
            feat = layer(feat)
    else:
        feat = op(feat)
    if norm is not None:
        feat = norm(feat)
    if grid_pad is None:
        return feat.contiguous()
    level_pad = scaled_pad(grid_pad, scale)
    return attach_pad_mask((feat * ~level_pad[:, None]).contiguous(), level_pad)


def init_rescale_weights(module: nn.Module) -> None:
    """ViTDet's initialisation of the pyramid convs."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(m.bias)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Args:
        in_channels: width of the backbone's map.
        out_channels: width of every level (one int) or one per level.
        scale_factors: one per level, each 4, 2, 1 or 0.5 (ViTDet: strides 4, 8, 16, 32 from a
            stride-16 map).
        in_index: which of the backbone's outputs feeds the pyramid (default: the last).
        norm: a LayerNorm over channels on every level (ViTDet's).

    ``forward(inputs)``: the backbone's tuple of NCHW maps -> one map per level.
    """

    def __init__(self, in_channels: int, out_channels: Union[int, Sequence[int]] = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), in_index: int = -1, norm: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        scale_factors = tuple(scale_factors)
        widths = (out_channels, ) * len(scale_factors) if isinstance(out_channels, int) else tuple(out_channels)
        if len(widths) != len(scale_factors):
            raise ValueError(f'out_channels needs one entry per level ({len(scale_factors)}), got {out_channels!r}')
        self.scale_factors = scale_factors
        self.in_index = in_index
        self.rescales = nn.ModuleList([build_rescale(s, in_channels, c) for s, c in zip(scale_factors, widths)])
        self.norms = nn.ModuleList([LayerNorm2d(c, eps=1e-6) for c in widths]) if norm else None
        init_rescale_weights(self.rescales)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple:
        feat = inputs[self.in_index] if isinstance(inputs, (list, tuple)) else inputs
        grid_pad = getattr(feat, PAD_MASK_ATTR, None)
        return tuple(rescale_level(op, s, feat, grid_pad, None if self.norms is None else self.norms[k])
                     for k, (op, s) in enumerate(zip(self.rescales, self.scale_factors)))
