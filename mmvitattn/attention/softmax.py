"""Softmax baselines: global multi-head attention and PVT's spatial-reduction attention."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import QKVMixer, TokenMixer, check_tokens, register_attention, sdpa_mask


@register_attention('softmax')
class SoftmaxAttention(QKVMixer):
    """Global softmax attention, softmax(s Q K^T) V, through ``F.scaled_dot_product_attention``."""

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_tokens(x, hw, pad_mask)
        q, k, v = self.project_qkv(x)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask(pad_mask))
        return self.output(self.merge_heads(y))


@register_attention('sra')
class SpatialReductionAttention(QKVMixer):
    """PVT's spatial-reduction attention: keys and values come from the token map shrunk by a
    strided ``sr_ratio`` x ``sr_ratio`` conv (then LayerNorm); ``sr_ratio=1`` is global softmax.
    ``qkv_layout`` 'q_kv' (PVT's names, the default) or 'qkv'.

    With a padding mask a reduced token is a key only when every token under it is real: alone,
    the strided conv drops the rows/columns that do not fill a whole ``sr_ratio`` cell.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, sr_ratio: int = 1,
                 proj_drop: float = 0.0, qkv_layout: str = 'q_kv'):
        TokenMixer.__init__(self, dim, num_heads)
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f'sr_ratio must be a positive int, got {sr_ratio!r}')
        self.sr_ratio = sr_ratio
        self.init_projections(qkv_bias, qkv_layout)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.init_output(proj_drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        prefix = check_tokens(x, hw, pad_mask)
        b, n, c = x.shape
        h, w = hw
        q = self.split_heads(self.project_q(x))
        kv_in, kv_pad = x, pad_mask
        if self.sr_ratio > 1:
            r = self.sr_ratio
            if h < r or w < r:
                raise ValueError(f'token map {h}x{w} is smaller than sr_ratio={r}')
            grid = x[:, prefix:].transpose(1, 2).reshape(b, c, h, w)
            reduced = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
            kv_in = torch.cat([x[:, :prefix], reduced], dim=1)
            if pad_mask is not None:
                padded = pad_mask[:, prefix:].reshape(b, 1, h, w).float()
                reduced_pad = F.max_pool2d(padded, r, r).flatten(1) > 0
                if bool(reduced_pad.all(dim=1).any()):
                    raise ValueError(f'an image of the batch has a real token map smaller than '
                                     f'sr_ratio={r} in height or width')
                kv_pad = torch.cat([pad_mask[:, :prefix], reduced_pad], dim=1)
        kv = self.project_kv(kv_in).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask(kv_pad))
        return self.output(self.merge_heads(y))

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, sr_ratio={self.sr_ratio}'
