"""Castling-ViT linear-angular attention (You et al., CVPR 2023), in the released core's form.

Similarity 1 - arccos(q^.k^)/pi ~= 1/2 + q^.k^/pi, q^ and k^ unit vectors, kept linear in N:
    y = 0.5 v + (1/pi) q^ (k^^T v)          (released form: the constant term is the token's own v)
    y += coef * (A * [A > tau]) v           (training only, A = softmax(s q k^T): auxiliary branch)
    y = y / ||y|| + dconv(v)                (dconv: depthwise (k_res, 1) conv along the token axis,
                                             heads as channels, shared across head dims)
``constant_term='sum'`` uses the kernel expansion's 0.5 * sum_j v_j instead (an option, not the
release). The auxiliary branch has no parameters, so a model trained with it loads unchanged into
the linear-only inference model; with the branch off no N x N tensor is ever built.

The auxiliary branch (this project's choice; the paper only says the masks are "regularized to
gradually become zeros") is driven by four attributes, the first three set per iteration by
:class:`mmvitattn.engine.CastlingAuxScheduleHook`:

- ``aux_coef``: weight of S v, annealed to 0; at 0 (and always in eval mode) the branch is skipped.
- ``aux_threshold``: tau of the mask; what it is compared with depends on ``aux_threshold_mode``.
- ``aux_l1_weight``: an L1 sparsity penalty on the masked weights S, applied as a gradient only
  (the detector's loss dict is untouched). The penalty is
  ``aux_l1_weight * mean over (image, head, real query i) of ||S_i||_1``, i.e. the sum of |S| over
  real query rows divided by the number of such rows (heads x real tokens of the batch); every row
  of S sums to at most 1, so the penalty is at most ``aux_l1_weight`` whatever the resolution.
  Padded query rows take no part. Its value is recorded in ``last_aux_l1`` (a float).
- ``aux_threshold_mode``:

  * ``'relative'`` (default): keep A_ij > tau / N_real, N_real the number of real (unpadded) keys
    of that image, i.e. tau is measured in units of the uniform weight 1/N_real.
  * ``'absolute'``: keep A_ij > tau, the release's rule (tau = 0.02 there).

Why relative: a row of A sums to 1 over N_real keys, so its mean weight is 1/N_real. An absolute
tau therefore means different things at different map sizes: at ImageNet's 14 x 14 = 196 tokens
the release's 0.02 is 3.9x the mean weight, but on a 4 x 5 map (20 keys, mean 0.05) it lies below
the mean and nearly every weight passes, whatever the training does; no tau < 1 serves both a
stride-4 and a stride-32 stage of a detector. Relative to 1/N_real, a row can hold fewer than
N_real / tau weights above the cut (they would otherwise sum to more than 1), so the density of
the mask is below 1 / tau at every resolution, per stage and per image, padded or not; tau ~ 4
reproduces the release at 196 tokens. Raising tau (the hook's threshold schedule) lowers that
bound. With tau > 1 the L1 penalty has its minimum where no weight passes (a row flattened
towards 1/N_real falls under the cut entirely), so it drives the density to 0 instead of fighting
the rows' unit sum; at tau = 1 exactly, flattened rows hover around the cut and about half their
weights keep passing, so give the penalty tau >= 1.5 or so. A per-row top-k fraction would fix
the density exactly, but then the L1 penalty could not change it and k needs a sort per row; the
relative cut costs one division per image. Note that attention trained from scratch starts close
to uniform, so for a while a relative tau much above 1 leaves the mask (nearly) empty.

``last_mask_density`` is the fraction of (real query, real key) pairs that passed the mask, over
all images and heads of the last forward that ran the branch.
"""
import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .base import (QKVMixer, check_tokens, custom_backward_wanted, depthwise_conv_tokens, float32_region,
                   register_attention, sdpa_mask, split_heads, to_float32)
from .head_products import head_rows, heads_times, kt_v

NORM_EPS = 1e-12  # F.normalize's
ANGULAR_SCALE = 2 / math.pi  # of q^ (k^^T v) in 2y (see angular_mix)


@register_attention('castling')
class CastlingAttention(QKVMixer):

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qkv_layout: str = 'qkv',
                 proj_drop: float = 0.0, kernel_size: int = 9, constant_term: str = 'self',
                 aux_softmax: bool = False, aux_threshold: float = 1.0, aux_chunk: int = 1024,
                 aux_threshold_mode: str = 'relative'):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, qkv_layout=qkv_layout,
                         proj_drop=proj_drop)
        if constant_term not in ('self', 'sum'):
            raise ValueError(f"unknown constant_term {constant_term!r}; expected 'self' (released) "
                             "or 'sum' (kernel expansion)")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be a positive odd int, got {kernel_size!r}')
        self.constant_term = constant_term
        self.dconv = nn.Conv2d(num_heads, num_heads, kernel_size=(kernel_size, 1),
                               padding=(kernel_size // 2, 0), groups=num_heads, bias=False)
        # Auxiliary masked-softmax branch: switched on per block, weighted by ``aux_coef``
        # (driven by a training hook), computed ``aux_chunk`` queries at a time.
        self.aux_softmax = aux_softmax
        self.aux_coef = 1.0
        self.aux_threshold_mode = aux_threshold_mode
        self.aux_threshold = check_aux_threshold(aux_threshold, aux_threshold_mode)
        self.aux_chunk = aux_chunk
        self.aux_l1_weight = 0.0
        # Statistics of the last forward that ran the branch (plain floats, no graph kept).
        self.last_mask_density: Optional[float] = None
        self.last_aux_l1: Optional[float] = None

    @property
    def aux_active(self) -> bool:
        return self.aux_softmax and self.training and self.aux_coef > 0

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_tokens(x, hw, pad_mask)
        h = self.num_heads
        q, k, v = self.project_separately(x)  # (B, N, C) each contiguous; heads split by view
        if pad_mask is not None:
            # Zero values: padded keys then drop out of k^^T v and of the conv; no mask on k needed.
            v = v * (~pad_mask).to(v.dtype)[..., None]
        # out = dconv(v) + y / ||y||: the normalised heads are added into the conv's (B, N, C)
        # output, which merges them with no copy of their own.
        out = self.token_conv(v, pad_mask)
        with float32_region(x):
            qf, kf, vf = to_float32(q, k, v)
            if self.aux_active:
                y = angular_mix(qf, kf, vf, h, self.constant_term)[0]
                aux = self.masked_softmax(*(split_heads(t, h) for t in (qf, kf, vf)), pad_mask)
                y = y + (2 * self.aux_coef) * aux.transpose(1, 2)
                add_unit_rows(out, y, inv_norm(y))
            elif custom_backward_wanted(qf, kf, vf):
                out = LinearAngular.apply(qf, kf, vf, out, h, self.constant_term)
            else:
                add_linear_angular(out, qf, kf, vf, h, self.constant_term)
        return self.output(out)

    def token_conv(self, v: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``dconv`` (a (k, 1) kernel per head sliding along the token axis, shared by the head's d
        channels) as a depthwise conv over the C channels, run on the (B, N, C) rows in
        channels-last memory; the same result as ``self.dconv`` on (B, h, N, d). With padding,
        each image's real tokens are first packed to the front in their order (padded tokens,
        zeros in ``v``, behind them), so the kernel sees the sequence the image has alone (a
        padded row would otherwise sit between two of its rows); the result is put back in place."""
        if pad_mask is None:
            return self._conv_tokens(v)
        order = torch.argsort(pad_mask.to(torch.int8), dim=1, stable=True)  # real tokens first
        index = order[:, :, None].expand_as(v)
        packed = self._conv_tokens(v.gather(1, index))
        return torch.empty_like(packed).scatter_(1, index, packed)

    def _conv_tokens(self, v: torch.Tensor) -> torch.Tensor:
        weight = self.dconv.weight.repeat_interleave(self.head_dim, dim=0)  # (C, 1, k, 1)
        return depthwise_conv_tokens(v, (v.shape[1], 1), weight, self.dconv.padding)

    def masked_softmax(self, q, k, v, pad_mask):
        """sum_j S_ij v_j with S = A * [A > cut], A = softmax(s q k^T) over real keys and cut given
        by ``aux_threshold_mode`` (:func:`mask_cut`), computed ``aux_chunk`` queries at a time (at
        most chunk x N weights per image and head exist at once). With ``aux_l1_weight`` > 0, S
        passes through :class:`L1PenaltyGrad`."""
        key_mask = sdpa_mask(pad_mask)  # (B, 1, 1, N) or None
        l1_weight = float(self.aux_l1_weight)
        if l1_weight < 0:
            raise ValueError(f'aux_l1_weight must be >= 0, got {self.aux_l1_weight!r}')
        tau = check_aux_threshold(self.aux_threshold, self.aux_threshold_mode)
        # At least float32: a count can exceed float16's range.
        dtype = torch.promote_types(q.dtype, torch.float32)
        cut = mask_cut(tau, self.aux_threshold_mode, pad_mask, q.shape[2], q.dtype, q.device)
        query_keep = None if pad_mask is None else (~pad_mask)[:, None, :, None]
        if pad_mask is None:
            real_pairs = q.shape[0] * q.shape[1] * q.shape[2] ** 2
        else:
            real_pairs = ((~pad_mask).sum(-1).to(dtype) ** 2).sum() * q.shape[1]
        if l1_weight > 0:
            rows = (q.shape[0] * q.shape[2] if pad_mask is None else (~pad_mask).sum()) * q.shape[1]
            l1_scale = l1_weight / torch.as_tensor(rows, dtype=dtype, device=q.device).clamp_min(1)
            l1_sum = torch.zeros((), dtype=dtype, device=q.device)
        outs = []
        kept = torch.zeros((), dtype=torch.long, device=q.device)
        for start in range(0, q.shape[2], self.aux_chunk):
            stop = start + self.aux_chunk
            logits = (q[:, :, start:stop] * self.scale) @ k.transpose(-2, -1)
            if key_mask is not None:
                logits = logits.masked_fill(~key_mask, float('-inf'))
            attn = logits.softmax(dim=-1)
            mask = attn > cut
            weights = attn * mask
            keep = None if query_keep is None else query_keep[:, :, start:stop]
            if l1_weight > 0:
                with torch.no_grad():
                    l1_sum += (weights.abs() if keep is None else weights.abs() * keep).sum()
                if weights.requires_grad:
                    weights = L1PenaltyGrad.apply(weights, l1_scale, None if keep is None else keep.to(q.dtype))
            outs.append(weights @ v)
            # Padded keys never pass (A = 0 there); padded query rows are left out of the count.
            kept += (mask if keep is None else mask & keep).sum()
        # One host sync for the statistics, after the last chunk.
        self.last_mask_density = float(kept) / max(float(real_pairs), 1.0)
        self.last_aux_l1 = float(l1_sum * l1_scale) if l1_weight > 0 else 0.0
        return torch.cat(outs, dim=2)


def inv_norm(t: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """1 / max(||t||, eps) over the last dim (``F.normalize``'s rule), kept as a (..., 1) factor."""
    return torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min(eps).reciprocal()


def inv_norm_backward(t: torch.Tensor, inv: torch.Tensor, grad: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """The gradient with respect to ``t`` of ``t * inv_norm(t)`` given ``grad`` of the result:
    inv * grad - inv^3 (t . grad) t where ||t|| > eps (the clamp's side), inv * grad elsewhere."""
    coef = (t * grad).sum(dim=-1, keepdim=True) * inv.pow(3) * (inv < 1 / eps)
    return torch.addcmul(grad * inv, t, coef, value=-1)


# The linear path works on token-major (B, N, h, d) views: per-token norms and scalings then run
# over memory as it lies (on head-major views they take strided loops, about 2x slower), and the
# per-head products write the heads already merged (:mod:`.head_products`).
def angular_mix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, constant_term: str):
    """Twice the released y, per head, of (B, N, C) q, k, v: 2y = v + (2/pi) q^ (k^^T v) [or
    sum_j v_j + ... for the expansion form]; y is normalised next, so the factor 2 changes nothing.
    Returns (2y (B, N, h, d), k^^T v (B, h, d, d), 1/||q||, 1/||k|| (B, N, h, 1))."""
    qr, kr = head_rows(q, num_heads), head_rows(k, num_heads)
    inv_q, inv_k = inv_norm(qr), inv_norm(kr)
    kv = kt_v((kr * inv_k).flatten(2), v, num_heads)
    return angular_y(q, v, kv, inv_q, constant_term), kv, inv_q, inv_k


def angular_y(q, v, kv, inv_q, constant_term: str) -> torch.Tensor:
    """2y of :func:`angular_mix` from its parts; 1/||q|| is applied to the (N, d) product's rows."""
    vr = head_rows(v, kv.shape[1])
    const = vr if constant_term == 'self' else vr.sum(dim=1, keepdim=True)
    return torch.addcmul(const, head_rows(heads_times(q, kv), kv.shape[1]), inv_q, value=ANGULAR_SCALE)


def add_unit_rows(base: torch.Tensor, y: torch.Tensor, inv_y: torch.Tensor, out: Optional[torch.Tensor] = None):
    """``out`` (B, N, C; default ``base``, in place) = base + y / ||y||, y (B, N, h, d)."""
    rows = base.view(y.shape)
    if out is None:
        rows.addcmul_(y, inv_y)
    else:
        torch.addcmul(rows, y, inv_y, out=out.view(y.shape))


def add_linear_angular(base, q, k, v, num_heads: int, constant_term: str, out=None):
    """``out`` (default ``base``, in place) = base + the normalised linear-angular attention of
    (B, N, C) q, k, v; returns what the backward of :class:`LinearAngular` needs besides q, k, v."""
    y, kv, inv_q, inv_k = angular_mix(q, k, v, num_heads, constant_term)
    inv_y = inv_norm(y)
    add_unit_rows(base, y, inv_y, out)
    return kv, inv_q, inv_k, inv_y


class LinearAngular(torch.autograd.Function):
    """``base + y / ||y||`` (:func:`add_linear_angular`, into a new tensor) with a backward that
    keeps only q, k, v (which the projection's output holds anyway), k^^T v and the three inverse
    norms, and recomputes q^, k^ and y: autograd of the formula would keep k^, q^ (k^^T v) and y,
    three more (N, C) tensors per block."""

    @staticmethod
    def forward(ctx, q, k, v, base, num_heads, constant_term):
        out = torch.empty_like(base, memory_format=torch.contiguous_format)
        kv, inv_q, inv_k, inv_y = add_linear_angular(base, q, k, v, num_heads, constant_term, out)
        ctx.save_for_backward(q, k, v, kv, inv_q, inv_k, inv_y)
        ctx.options = num_heads, constant_term
        return out

    @staticmethod
    def backward(ctx, g_out):
        q, k, v, kv, inv_q, inv_k, inv_y = ctx.saved_tensors
        num_heads, constant_term = ctx.options
        qr, kr = head_rows(q, num_heads), head_rows(k, num_heads)
        c = ANGULAR_SCALE
        g = head_rows(g_out.to(q.dtype), num_heads)
        g_y = inv_norm_backward(angular_y(q, v, kv, inv_q, constant_term), inv_y, g)  # (B, N, h, d)
        g_kv = kt_v((qr * inv_q).flatten(2), g_y.flatten(2), num_heads) * c  # (B, h, d, d)
        g_q = inv_norm_backward(qr, inv_q, head_rows(heads_times(g_y.flatten(2), kv.transpose(-2, -1)), num_heads) * c)
        g_k = inv_norm_backward(kr, inv_k, head_rows(heads_times(v, g_kv.transpose(-2, -1)), num_heads))
        # g_v = g_const + k^ g_kv, accumulated into g_const (g_y itself is not needed any more).
        g_const = g_y if constant_term == 'self' else g_y.sum(dim=1, keepdim=True).expand_as(g_y).contiguous()
        g_v = heads_times((kr * inv_k).flatten(2), g_kv, out=g_const.flatten(2))
        return g_q.flatten(2), g_k.flatten(2), g_v, g_out, None, None


THRESHOLD_MODES = ('relative', 'absolute')


def check_aux_threshold(tau, mode: str) -> float:
    """``tau`` as a float after checking it suits ``mode``; errors name the bad value."""
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"unknown aux_threshold_mode {mode!r}; expected 'relative' (tau / N_real keys) "
                         "or 'absolute' (the release's A > tau)")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f'aux_threshold must be a finite number >= 0, got {tau!r}')
    if mode == 'absolute' and tau >= 1:
        # Softmax weights are < 1 (with two or more keys): the mask would be empty.
        raise ValueError(f"aux_threshold {tau!r} with aux_threshold_mode='absolute' masks out every weight; "
                         "expected a number in [0, 1) (or use 'relative', where tau is in units of 1/N_real)")
    return float(tau)


def mask_cut(tau: float, mode: str, pad_mask: Optional[torch.Tensor], num_tokens: int,
             dtype: torch.dtype, device) -> Union[float, torch.Tensor]:
    """What a softmax weight must exceed to pass the mask: ``tau`` ('absolute'), or ``tau / N_real``
    ('relative') with N_real the real keys of each image, a (B, 1, 1, 1) tensor when padded."""
    if mode == 'absolute':
        return tau
    if pad_mask is None:
        return tau / num_tokens
    real = (~pad_mask).sum(-1).clamp_min(1).to(torch.promote_types(dtype, torch.float32))
    return (tau / real).to(device=device, dtype=dtype)[:, None, None, None]


class L1PenaltyGrad(torch.autograd.Function):
    """Identity in the forward pass; the backward pass adds ``scale * sign(S) [* keep]``, the
    gradient of ``scale * sum |S|`` (over the rows ``keep`` marks), to the incoming gradient. This
    puts an L1 penalty on S into training without adding a term to the model's loss."""

    @staticmethod
    def forward(ctx, weights, scale, keep=None):
        ctx.save_for_backward(weights, scale, keep)
        return weights.view_as(weights)  # no copy: shares storage with S saved by the matmul

    @staticmethod
    def backward(ctx, grad):
        weights, scale, keep = ctx.saved_tensors
        extra = torch.sign(weights) * scale
        if keep is not None:
            extra = extra * keep
        return grad + extra, None, None
