"""What projects the tokens to q, k, v and the attention result back: chosen by the family, apart
from the mixing (a mixer's math never depends on it).

``qkv_layout`` names the projections:

* ``'qkv'``    one fused ``qkv`` linear C -> 3C (ViT/DeiT/Swin naming) and a ``proj`` linear;
* ``'q_kv'``   separate ``q`` (C -> C) and ``kv`` (C -> 2C) linears (PVT naming) and a ``proj`` linear;
* ``'bn_qkv'`` LeViT's: a fused ``qkv`` BN-linear (a bias-free linear, then BatchNorm over the tokens)
  and ``proj`` = Hardswish then a BN-linear (``proj.act``, ``proj.ln``), as LeViT's attention has.

Rows are [q | k | v] (or [k | v] for ``kv``) in every layout, so the q, k and v of any layout are
column slices of one output; a checkpoint's own naming is a key map in its family's converter.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

QKV_LAYOUTS = ('qkv', 'q_kv', 'bn_qkv')


class BNLinear(nn.Module):
    """Bias-free linear over the channels of tokens (B, N, C), then BatchNorm over all B*N tokens."""

    def __init__(self, in_dim: int, out_dim: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.flatten(0, -2)).view_as(y)


def check_qkv_layout(qkv_layout: str) -> str:
    if qkv_layout not in QKV_LAYOUTS:
        raise ValueError(f'unknown qkv_layout {qkv_layout!r}; expected one of {QKV_LAYOUTS}')
    return qkv_layout


def input_projection(dim: int, out_dim: int, qkv_layout: str, bias: bool) -> nn.Module:
    """A C -> ``out_dim`` projection of the tokens in the style of ``qkv_layout``."""
    if check_qkv_layout(qkv_layout) == 'bn_qkv':
        return BNLinear(dim, out_dim)  # LeViT's BN-linears have no bias of their own
    return nn.Linear(dim, out_dim, bias=bias)


def output_projection(dim: int, qkv_layout: str) -> nn.Module:
    """The C -> C projection after the mixing, in the style of ``qkv_layout``."""
    if check_qkv_layout(qkv_layout) == 'bn_qkv':
        return nn.Sequential(OrderedDict([('act', nn.Hardswish()), ('ln', BNLinear(dim, dim))]))
    return nn.Linear(dim, dim)


def project_rows(layer: nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Output channels [start, stop) of the projection ``layer`` (a Linear or a BN-linear) of x."""
    if isinstance(layer, nn.Linear):
        bias = None if layer.bias is None else layer.bias[start:stop]
        return F.linear(x, layer.weight[start:stop], bias)
    y = F.linear(x, layer.linear.weight[start:stop])
    bn = layer.bn
    if bn.running_mean is None:  # no running statistics: always the batch's
        return F.batch_norm(y.flatten(0, -2), None, None, bn.weight[start:stop], bn.bias[start:stop], True,
                            0.0, bn.eps).view_as(y)
    momentum = bn.momentum
    if bn.training:
        if start == 0:
            bn.num_batches_tracked.add_(1)  # counted once per forward: on the slice holding the first rows
        if momentum is None:  # a cumulative average, as nn.BatchNorm1d keeps it
            momentum = 1.0 / float(bn.num_batches_tracked)
    # Slices of the running statistics are views: training updates them in place.
    out = F.batch_norm(y.flatten(0, -2), bn.running_mean[start:stop], bn.running_var[start:stop],
                       bn.weight[start:stop], bn.bias[start:stop], bn.training, momentum or 0.0, bn.eps)
    return out.view_as(y)


def affine_rows(layer: nn.Module, start: int, stop: int):
    """(weight, bias) such that output channels [start, stop) of ``layer`` are ``x W^T + b``, or
    None when they are not affine in x alone (a BatchNorm on batch statistics, in training)."""
    if isinstance(layer, nn.Linear):
        return layer.weight[start:stop], None if layer.bias is None else layer.bias[start:stop]
    bn = layer.bn
    if bn.training or bn.running_mean is None:
        return None
    scale = bn.weight[start:stop] * (bn.running_var[start:stop] + bn.eps).rsqrt()
    weight = layer.linear.weight[start:stop] * scale[:, None]
    return weight, bn.bias[start:stop] - bn.running_mean[start:stop] * scale


def batch_affine(layer: nn.Module, x: torch.Tensor, pad_mask=None):
    """(weight, bias) of the affine map the projection ``layer`` is on this batch, for a mixer that
    applies it to other token sets (windows) than the batch: a Linear's own; a BN-linear's with
    its running statistics, or in training with the statistics of the batch's real tokens (as
    ``nn.BatchNorm1d`` takes them, differentiable, running statistics updated)."""
    if isinstance(layer, nn.Linear):
        return layer.weight, layer.bias
    affine = affine_rows(layer, 0, layer.linear.out_features)
    if affine is not None:
        return affine
    tokens = x.flatten(0, -2) if pad_mask is None else x[~pad_mask]
    z = F.linear(tokens, layer.linear.weight)
    mean, var = z.mean(dim=0), z.var(dim=0, unbiased=False)
    bn = layer.bn
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            n = z.shape[0]
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * n / max(n - 1, 1), alpha=m)
    scale = bn.weight * (var + bn.eps).rsqrt()
    return layer.linear.weight * scale[:, None], bn.bias - mean * scale
