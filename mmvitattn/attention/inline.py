"""InLine: injective linear attention with a dynamic local residual (Han et al., NeurIPS 2024).

Attention weights, with the identity kernel and the factor s/N folded in as in the released models:
    w_ij = (s/N) q_i.k_j - (s/N) q_i.mean_t(k_t) + 1/N     (rows sum to 1, injective)
so out_i = (s/N) q_i (K^T V) + (1 - s q_i.mean(k)) mean(v), computed here in one matmul as
    out_i = q_i [s (K^T V / N - mean(k)^T mean(v))] + mean(v),
which is linear in N. The local residual is a per-image 3x3 depthwise conv on V whose kernel is
predicted from the token mean of the block input by a small grouped MLP; it is added before proj.
Prefix (cls) tokens take part in every mean but not in the conv.

How it is computed (speed, no change to the result):
- the only reduction over the tokens besides K^T V is mean(x): mean(k) and mean(v) follow from the
  projection's linearity, mean(x W^T + b) = mean(x) W^T + b;
- the attention's per-head d x d matrix KV = s (K^T V / N - mean(k)^T mean(v)) is folded into the
  query projection when the tokens outnumber the channels: q_h KV_h = x (Wq_h^T KV_h) + bq_h KV_h,
  so one (N, C) x (C, C) product gives every head's result already merged, q is never formed, and
  the products cost N C^2 instead of N C^2 + N C d (building the folded weight costs C^2 d);
- that product accumulates into the local residual's output (beta = 1), whose bias is mean(v)
  plus the folded query bias: no add and no head merge of their own;
- otherwise q, k, v stay column views of the projection output (B, N, C); heads are split by
  ``view``, so K^T V and q @ KV run as batched GEMMs on strided operands with no copies, and
  q @ KV writes its heads already merged (:mod:`.head_products`);
- the depthwise convs of all images are one grouped conv over B*C channels (the released code's
  form) in channels-last memory, i.e. on the (H, W, B, C) rows; its backward recomputes that copy
  of V rather than keeping it; the kernel MLP runs as grouped matrix products.
Under float16/bfloat16 autocast the means and K^T V (sums over all N tokens) are taken in float32.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import (QKVMixer, TokenMixer, channels_last_map, channels_last_tokens, check_tokens, conv_on_tokens,
                   float32_region, register_attention, to_float32)
from .head_products import heads_times, kt_v
from .projections import affine_rows


def inline_kv(k: torch.Tensor, v: torch.Tensor, k_mean: torch.Tensor, v_mean: torch.Tensor, count,
              scale: float) -> torch.Tensor:
    """The InLine formula's per-head d x d matrix KV = s (K^T V / N - mean(k)^T mean(v)): head h of
    the attention is q_h KV_h + mean(v_h) (the caller adds mean(v), fused into the local
    residual's conv as its bias).

    k, v: (B, N, C) (any row stride; heads split by ``view``), padded values already zero;
    k_mean, v_mean: (B, h, 1, d) over the real tokens; count: N, or (B, 1, 1, 1) real tokens.
    Returns (B, h, d, d)."""
    ktv = kt_v(k, v, k_mean.shape[1])
    return (ktv / count - k_mean.transpose(-2, -1) @ v_mean) * scale


def fold_into_query(weight: torch.Tensor, bias: Optional[torch.Tensor], kv: torch.Tensor):
    """The query projection (``weight`` (C, C_in), ``bias`` (C) or None) followed by each head's
    d x d matrix kv (B, h, d, d), as one affine map per image: x -> x W + b' with W (B, C_in, C)
    and b' (B, C) (zeros without a bias), so that (x Wq^T + bq)_h kv_h = (x W + b')_h."""
    h, d = kv.shape[1], kv.shape[-1]
    w_heads = weight.t().reshape(-1, h, d).transpose(0, 1).to(kv.dtype)  # (h, C_in, d)
    folded = (w_heads @ kv).permute(0, 2, 1, 3).flatten(2)  # (B, C_in, C)
    if bias is None:
        return folded, kv.new_zeros(kv.shape[0], h * d)
    return folded, (bias.view(h, 1, d).to(kv.dtype) @ kv).flatten(1)


@register_attention('inline')
class InLineAttention(QKVMixer):
    """InLine attention (see the module docstring).

    Options of the released variants:
        lepe: add CSWin's static LePE, a 3x3 depthwise conv ``get_v`` of V, to the local residual
            (InLine-CSwin).
        projections: False builds the mixing part only (``get_v``, ``residual``) for a block that
            projects q/k/v and the output itself (InLine-CSwin's released layout); it is then
            called through :meth:`mix`, which also takes the token mean the kernel is predicted
            from (InLine-CSwin predicts it from the block input, before the norm).
    """
    kernel_size = 3

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qkv_layout: str = 'qkv',
                 proj_drop: float = 0.0, lepe: bool = False, projections: bool = True):
        TokenMixer.__init__(self, dim, num_heads)
        self.projections = projections
        if projections:
            self.init_projections(qkv_bias, qkv_layout)
            self.init_output(proj_drop)
        # Names (get_v, residual.0 / residual.2) follow the released checkpoints.
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim) if lepe else None
        taps = self.kernel_size**2
        self.residual = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size=1, groups=num_heads),
            nn.GELU(),
            nn.Conv1d(dim, dim * taps, kernel_size=1, groups=num_heads))

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.projections:
            raise RuntimeError('InLineAttention(projections=False) mixes given q, k, v: call mix(q, k, v, ...)')
        prefix = check_tokens(x, hw, pad_mask)
        b, n, c = x.shape
        h, d = self.num_heads, self.head_dim
        query = self.foldable_query(n)
        if query is None:
            q, k, v = self.project_tokens(x)
        else:  # q is folded into the last product; k and v as their own products, each contiguous
            k, v = self.project_separately(x, 'kv')
        acc = torch.promote_types(x.dtype, torch.float32)
        if pad_mask is not None:
            keep = (~pad_mask).to(v.dtype)[..., None]  # (B, N, 1)
            v = v * keep  # padded values out of K^T V and of the local conv
        with float32_region(x):
            if pad_mask is None:
                count = n  # not float(n): under torch.export N stays symbolic, not the traced value
                x_mean = x.mean(dim=1, dtype=acc)
            else:
                real = (~pad_mask).to(acc)[:, None, :]  # (B, 1, N)
                count = real.sum(dim=-1).clamp_min(1)  # (B, 1)
                x_mean = (real @ x.to(acc)).squeeze(1) / count
                count = count[:, :, None, None]  # (B, 1, 1, 1)
            # mean(k) and mean(v): from mean(x) where the projection is affine (``kv_mean``).
            kv_mean = self.kv_mean(x_mean, k, v, pad_mask)
            k_mean, v_mean = kv_mean.reshape(b, 2, h, 1, d).unbind(1)  # (B, h, 1, d)
            kv = inline_kv(*to_float32(k, v), k_mean, v_mean, count, self.scale)
            if query is None:
                y = heads_times(to_float32(q)[0], kv)
            else:
                weight, bias = fold_into_query(*query, kv)
        v_mean = v_mean.reshape(b, c).to(v.dtype)
        if query is None:
            out = y.to(v.dtype)  # the heads came out merged
            if prefix:
                out[:, :prefix] += v_mean[:, None]
            out[:, prefix:] += self.local_residual(x_mean.to(v.dtype), v[:, prefix:], hw, bias=v_mean)
            return self.output(out)
        bias = v_mean + bias.to(v.dtype)
        out = self.local_residual(x_mean.to(v.dtype), v[:, prefix:], hw, bias=bias)
        if prefix:
            out = torch.cat([bias[:, None].expand(b, prefix, c), out], dim=1)
        x, weight = x.to(out.dtype), weight.to(out.dtype)
        # out += x W (the folded query and attention): in place into the conv's output when no graph is kept.
        out = torch.baddbmm(out, x, weight) if torch.is_grad_enabled() else out.baddbmm_(x, weight)
        return self.output(out)

    def foldable_query(self, num_tokens: int):
        """(weight, bias) of the query projection, to fold the attention's d x d matrices into (see
        the module docstring); None when that does not pay (no more tokens than channels) or q is
        not affine in x alone (a BatchNorm on batch statistics)."""
        if not torch.compiler.is_exporting() and num_tokens <= self.dim:  # no guard on a traced size
            return None
        return affine_rows(*self._rows('q'))

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Tuple[int, int], x_mean: torch.Tensor,
            pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """InLine of projected q, k, v (B, H*W, C) plus the local residual with kernels predicted
        from ``x_mean`` (B, C); returns (B, H*W, C), before any output projection. Means are over
        real (unpadded) tokens."""
        b, n, c = q.shape
        h, d = self.num_heads, self.head_dim
        count = n  # not float(n): under torch.export N stays symbolic, not the traced value
        if pad_mask is not None:
            real = (~pad_mask).to(q.dtype)[..., None]  # (B, N, 1)
            k, v = k * real, v * real
        with float32_region(q):  # sums over all N tokens: float32 under float16/bfloat16 autocast
            qf, kf, vf = to_float32(q, k, v)
            if pad_mask is not None:
                count = (~pad_mask).sum(dim=1).clamp_min(1).to(qf.dtype)[:, None, None, None]
            k_mean = kf.sum(dim=1).reshape(b, h, 1, d) / count
            v_mean = vf.sum(dim=1).reshape(b, h, 1, d) / count
            y = heads_times(qf, inline_kv(kf, vf, k_mean, v_mean, count, self.scale))
        local = self.local_residual(x_mean, v, hw, bias=v_mean.reshape(b, c).to(v.dtype))
        return y.to(local.dtype) + local

    def local_residual(self, x_mean: torch.Tensor, v_map: torch.Tensor, hw: Tuple[int, int],
                       bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-image depthwise 3x3 conv of V (B, H*W, C) with kernels predicted from x_mean (B, C)
        [+ ``bias`` (B, C)] [+ the static LePE conv with ``lepe``]; returns (B, H*W, C). Runs in
        channels-last memory, i.e. on the token rows as they are."""
        b, _, c = v_map.shape
        kernels = self.predict_kernels(x_mean)  # (B, 9C)
        kernels = kernels.reshape(b * c, 1, self.kernel_size, self.kernel_size).to(v_map.dtype)
        if torch.compiler.is_exporting():
            # ONNX's Conv takes a fixed group count, so B * C groups would fix the batch: the
            # same sum of shifted, weighted copies of V, written out (any batch).
            out = shifted_sum_conv(v_map, kernels.view(b, c, -1), hw, bias)
        else:
            out = batch_depthwise_conv(v_map, kernels, None if bias is None else bias.reshape(b * c), hw)
        if self.get_v is not None:
            out = out + channels_last_tokens(self.get_v(channels_last_map(v_map, hw)))
        return out

    def predict_kernels(self, x_mean: torch.Tensor) -> torch.Tensor:
        """The ``residual`` MLP (two head-grouped 1x1 convs with a GELU between) on x_mean (B, C),
        as grouped matrix products: (B, 9C), the conv's output channels. (On a length-1 input the
        grouped convs take a slow per-group path, a fixed cost per block that dominates at 224.)"""
        first, act, second = self.residual
        return grouped_linear(act(grouped_linear(x_mean, first)), second)

    def extra_repr(self) -> str:
        extra = ('' if self.projections else ', projections=False') + (', lepe=True' if self.get_v is not None else '')
        return super().extra_repr() + extra


def grouped_linear(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A grouped 1x1 ``conv`` applied to (B, C_in) as if it were (B, C_in, 1), as one batched
    product over the groups; returns (B, C_out)."""
    g, b = conv.groups, x.shape[0]
    weight = conv.weight.view(g, conv.out_channels // g, conv.in_channels // g)
    xs = x.view(b, g, -1).permute(1, 2, 0)  # (g, C_in / g, B)
    y = torch.bmm(weight, xs) if conv.bias is None else torch.baddbmm(conv.bias.view(g, -1, 1), weight, xs)
    return y.permute(2, 0, 1).reshape(b, conv.out_channels)


def shifted_sum_conv(tokens: torch.Tensor, kernels: torch.Tensor, hw: Tuple[int, int],
                     bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise k x k conv (zero padding k // 2) of (B, H*W, C) tokens with a kernel per image and
    channel, ``kernels`` (B, C, k*k) in row-major tap order [+ ``bias`` (B, C)], as k*k shifted
    multiply-adds; returns (B, H*W, C). Slower than a conv, but written with no count of groups fixed."""
    b, _, c = tokens.shape
    (h, w), k = hw, math.isqrt(kernels.shape[-1])
    grid = F.pad(tokens.reshape(b, h, w, c), (0, 0, k // 2, k // 2, k // 2, k // 2))
    taps = kernels.transpose(1, 2)[:, :, None, None, :]  # (B, k*k, 1, 1, C)
    out = grid[:, :h, :w] * taps[:, 0]
    if bias is not None:
        out = out + bias[:, None, None, :]
    for t in range(1, k * k):
        i, j = divmod(t, k)
        out = out + grid[:, i:i + h, j:j + w] * taps[:, t]
    return out.reshape(b, h * w, c)


def batch_grid(tokens: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens (any row stride) -> the (1, B*C, H, W) map of one grouped conv over all
    images, in channels-last memory: its (H, W, B, C) rows, made with one copy."""
    b, _, c = tokens.shape
    grid = tokens.reshape(b, hw[0], hw[1], c).permute(1, 2, 0, 3).reshape(1, hw[0], hw[1], b * c)
    return grid.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def batch_tokens(grid: torch.Tensor, b: int) -> torch.Tensor:
    """The inverse of :func:`batch_grid`: (1, B*C, H, W) channels-last -> (B, H*W, C), a view."""
    return grid[0].permute(1, 2, 0).reshape(-1, b, grid.shape[1] // b).transpose(0, 1)


def batch_depthwise_conv(tokens: torch.Tensor, kernels: torch.Tensor, bias: Optional[torch.Tensor],
                         hw: Tuple[int, int]) -> torch.Tensor:
    """Depthwise 3x3 conv (zero padding 1) of (B, H*W, C) tokens with a kernel per image and channel
    (``kernels`` (B*C, 1, 3, 3), ``bias`` (B*C) or None), all images in one grouped conv over B*C
    channels (the released code's form); returns (B, H*W, C). Its backward remakes the grid copy of
    the tokens (:class:`~mmvitattn.attention.base.TokenGridConv`)."""
    layout = (lambda t: batch_grid(t, hw)), batch_tokens
    return conv_on_tokens(tokens, kernels, bias, kernels.shape[-1] // 2, kernels.shape[0], layout)
