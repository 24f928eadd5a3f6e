"""Armour: compact self-attention that shares the query and value projections (W_Q = W_V).

out = softmax(s V K^T) V with V = x W_V and K = x W_K: two projections instead of three. The
shared matrix is used both before and after the softmax. One ``kv`` projection (C -> 2C) holds K and V
whatever the family's naming, so the same module serves DeiT- and PVT-style trunks (and, with
``qkv_layout='bn_qkv'``, LeViT's BN-linear projections).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import TokenMixer, check_tokens, register_attention, sdpa_mask
from .projections import input_projection, output_projection


@register_attention('armour')
class ArmourAttention(TokenMixer):

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0,
                 qkv_layout: str = 'qkv'):
        super().__init__(dim, num_heads)
        # One [k | v] projection in every layout ('bn_qkv': LeViT's BN-linear and Hardswish output).
        self.kv = input_projection(dim, dim * 2, qkv_layout, qkv_bias)
        self.proj = output_projection(dim, qkv_layout)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_tokens(x, hw, pad_mask)
        b, n, _ = x.shape
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(v, k, v, attn_mask=sdpa_mask(pad_mask))
        return self.proj_drop(self.proj(self.merge_heads(y)))
