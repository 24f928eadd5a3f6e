"""InLine: injective linear attention with a dynamic local residual (Han et al., NeurIPS 2024).

Attention weights, with the identity kernel and the factor s/N folded in as in the released models:
    w_ij = (s/N) q_i.k_j - (s/N) q_i.mean_t(k_t) + 1/N     (rows sum to 1, injective)
so out_i = (s/N) q_i (K^T V) + (1 - s q_i.mean(k)) mean(v), computed here in one matmul as
    out_i = s q_i (K^T V / N - mean(k)^T mean(v)) + mean(v),
which is linear in N. The local residual is a per-image 3x3 depthwise conv on V whose kernel is
predicted from the token mean of the block input by a small grouped MLP; it is added before proj.
Prefix (cls) tokens take part in every mean but not in the conv.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import QKVMixer, check_tokens, keep_weights, register_attention


@register_attention('inline')
class InLineAttention(QKVMixer):
    kernel_size = 3

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qkv_layout: str = 'qkv',
                 proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, qkv_layout=qkv_layout,
                         proj_drop=proj_drop)
        taps = self.kernel_size**2
        # Index names (residual.0 / residual.2) follow the released checkpoints.
        self.residual = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size=1, groups=num_heads),
            nn.GELU(),
            nn.Conv1d(dim, dim * taps, kernel_size=1, groups=num_heads))

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        prefix = check_tokens(x, hw, pad_mask)
        b, n, c = x.shape
        q, k, v = self.project_qkv(x)
        keep = keep_weights(pad_mask, x)
        if keep is None:
            count = x.new_full((1, 1, 1, 1), n)
            x_mean = x.mean(dim=1)
        else:
            k, v = k * keep, v * keep
            count = keep.sum(dim=2, keepdim=True).clamp_min(1)  # (B, 1, 1, 1)
            x_mean = (x * keep[:, 0]).sum(dim=1) / count[:, 0, 0]
        k_mean = k.sum(dim=2, keepdim=True) / count  # (B, h, 1, d)
        v_mean = v.sum(dim=2, keepdim=True) / count
        kv = k.transpose(-2, -1) @ v / count - k_mean.transpose(-2, -1) @ v_mean  # (B, h, d, d)
        y = self.merge_heads((q * self.scale) @ kv + v_mean)
        local = self.local_residual(x_mean, self.merge_heads(v)[:, prefix:], hw)
        y = y + local if prefix == 0 else torch.cat([y[:, :prefix], y[:, prefix:] + local], dim=1)
        return self.output(y)

    def local_residual(self, x_mean: torch.Tensor, v_map: torch.Tensor,
                       hw: Tuple[int, int]) -> torch.Tensor:
        """Per-image depthwise 3x3 conv of V (B, H*W, C) with kernels predicted from x_mean (B, C)."""
        b, _, c = v_map.shape
        h, w = hw
        kernels = self.residual(x_mean.unsqueeze(-1)).reshape(b * c, 1, self.kernel_size,
                                                              self.kernel_size)
        grid = v_map.transpose(1, 2).reshape(1, b * c, h, w)
        out = F.conv2d(grid, kernels, padding=self.kernel_size // 2, groups=b * c)
        return out.reshape(b, c, h * w).transpose(1, 2)
