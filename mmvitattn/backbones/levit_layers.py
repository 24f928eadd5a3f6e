"""LeViT's layers (Graham et al., ICCV 2021; names as in timm's linear-mode ``levit_*``): the conv
stem, BN-linear MLPs, residual and shrinking blocks and the BN-linear classifier head. The
attentions themselves are in :mod:`mmvitattn.attention.levit`; the backbone composes these."""
import contextlib
from typing import List, Optional, Tuple

import torch
from mmengine.model.weight_init import trunc_normal_
from timm.layers import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..attention import build_attention
from ..attention.levit import LEVIT_ATTENTIONS, BNLinear, LeViTAttention, LeViTShrinkAttention


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
    ``attn_cfg`` and ``dim // key_dim`` heads (the rule of LeViT's shrinking attention, so each
    head has ``key_dim`` channels) on LeViT's projections: a BN-linear ``qkv``, and Hardswish then
    a BN-linear ``proj`` whose BatchNorm starts at ``out_bn_init`` (``qkv_layout='bn_qkv'``, the
    family's default; ``attn_cfg`` may choose plain linears)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float,
                 attention: str, resolution: Tuple[int, int], bias_mode: str, drop_path: float = 0.0,
                 out_bn_init: float = 0.0, attn_cfg: Optional[dict] = None):
        super().__init__()
        if attention in LEVIT_ATTENTIONS:
            self.attn = LeViTAttention(dim, num_heads, key_dim=key_dim, attn_ratio=attn_ratio, attention=attention,
                                       resolution=resolution, bias_mode=bias_mode, out_bn_init=out_bn_init)
        else:
            if dim % key_dim:
                raise ValueError(f'{attention!r} attention in LeViT uses dim // key_dim heads: key_dim={key_dim} '
                                 f'must divide the stage width {dim}')
            self.attn = build_attention(attention, dim, dim // key_dim, **(attn_cfg or {}))
            out_bn = getattr(getattr(self.attn, 'proj', None), 'ln', None)
            if isinstance(out_bn, BNLinear):  # LeViT's residual branches start as identities
                nn.init.constant_(out_bn.bn.weight, out_bn_init)
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
def keep_bn_statistics(module: nn.Module):
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
