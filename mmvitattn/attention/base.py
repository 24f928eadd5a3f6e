"""The interface every token mixer shares, and the name -> class table configs choose from.

A token mixer maps tokens ``x`` of shape (B, N, C) to the same shape. It is told the real
spatial size ``hw = (H, W)`` of the token map (never derived from N): the last ``H * W`` tokens
are the map in row-major order and any tokens before them (a cls token) are "prefix" tokens.
``pad_mask`` (B, N) bool, True for tokens that come from batch padding, is optional; padded
tokens take no part in any sum, mean or softmax, so real tokens get the same result as if the
image had been run alone.
"""
import contextlib
from typing import Dict, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from .projections import affine_rows, check_qkv_layout, input_projection, output_projection, project_rows

ATTENTIONS: Dict[str, Type['TokenMixer']] = {}


def register_attention(name: str):
    """Class decorator: make a token mixer available to configs under ``name``."""

    def wrap(cls):
        if name in ATTENTIONS:
            raise KeyError(f'attention {name!r} is registered twice')
        ATTENTIONS[name] = cls
        cls.attention_name = name
        return cls

    return wrap


def build_attention(name: str, dim: int, num_heads: int, **kwargs) -> 'TokenMixer':
    """Build the token mixer registered as ``name``; errors name the bad value."""
    if name not in ATTENTIONS:
        raise ValueError(f'unknown attention type {name!r}; expected one of {sorted(ATTENTIONS)}')
    return ATTENTIONS[name](dim, num_heads, **kwargs)


def check_heads(dim: int, num_heads: int) -> int:
    """Return the head dimension, or fail early if ``num_heads`` does not divide ``dim``."""
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f'num_heads must be a positive int, got {num_heads!r}')
    if dim % num_heads:
        raise ValueError(f'num_heads={num_heads} does not divide the embedding width {dim}; '
                         f'choose a head count that divides {dim}')
    return dim // num_heads


class TokenMixer(nn.Module):
    """Base class: holds the head split and the helpers shared by all mechanisms.
    ``takes_prefix_tokens``: False for mixers defined on a token grid only (windows)."""
    attention_name = 'base'
    takes_prefix_tokens = True

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.scale = self.head_dim**-0.5

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, h, N, d)."""
        return split_heads(t, self.num_heads)

    @staticmethod
    def merge_heads(t: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d) -> (B, N, C)."""
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}'


def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, h, N, C/h); a view when the rows allow it (column views of a projection do)."""
    b, n, c = t.shape
    return t.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def check_tokens(x: torch.Tensor, hw: Tuple[int, int], pad_mask: Optional[torch.Tensor]) -> int:
    """Validate the token/size contract and return the number of prefix tokens."""
    h, w = hw
    n = x.shape[1]
    if h * w > n:
        raise ValueError(f'token map {h}x{w} needs at least {h * w} tokens, got {n}')
    if pad_mask is not None and pad_mask.shape != x.shape[:2]:
        raise ValueError(f'pad_mask must have shape {tuple(x.shape[:2])} (batch, tokens), '
                         f'got {tuple(pad_mask.shape)}')
    return n - h * w


def keep_weights(pad_mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """(B, N) padding mask -> (B, 1, N, 1) weights, 1 for real tokens and 0 for padded ones."""
    if pad_mask is None:
        return None
    return (~pad_mask).to(like.dtype)[:, None, :, None]


def sdpa_mask(pad_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(B, N) padding mask -> boolean SDPA mask (B, 1, 1, N) with True for keys that take part."""
    if pad_mask is None:
        return None
    return ~pad_mask[:, None, None, :]


class QKVMixer(TokenMixer):
    """A token mixer with query/key/value projections of the family's choosing.

    ``qkv_layout`` (:mod:`~mmvitattn.attention.projections`): ``'qkv'``, one fused ``qkv`` linear
    (ViT/DeiT/Swin naming); ``'q_kv'``, separate ``q`` and ``kv`` linears (PVT naming);
    ``'bn_qkv'``, LeViT's BN-linear ``qkv`` and Hardswish + BN-linear ``proj``. The projections
    never enter the mixing: every mixer computes the same function of q, k, v with any of them, so
    a family's projections never limit which mixer it can run.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qkv_layout: str = 'qkv',
                 proj_drop: float = 0.0):
        super().__init__(dim, num_heads)
        self.init_projections(qkv_bias, qkv_layout)
        self.init_output(proj_drop)

    def init_projections(self, qkv_bias: bool, qkv_layout: str) -> None:
        """The q/k/v projections, named by ``qkv_layout``."""
        dim = self.dim
        if check_qkv_layout(qkv_layout) == 'q_kv':
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        else:
            self.qkv = input_projection(dim, dim * 3, qkv_layout, qkv_bias)
        self.qkv_layout = qkv_layout

    def init_output(self, proj_drop: float) -> None:
        self.proj = output_projection(self.dim, getattr(self, 'qkv_layout', 'qkv'))
        self.proj_drop = nn.Dropout(proj_drop)

    def _rows(self, part: str):
        """(layer, start, stop) of ``part`` ('q' or 'kv') in this layout's projections."""
        if self.qkv_layout == 'q_kv':
            layer = self.q if part == 'q' else self.kv
            return layer, 0, layer.out_features
        return (self.qkv, 0, self.dim) if part == 'q' else (self.qkv, self.dim, 3 * self.dim)

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> q (B, N, C)."""
        layer, start, stop = self._rows('q')
        return project_rows(layer, x, start, stop)

    def project_kv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, C) -> [k | v] (B, M, 2C): keys and values may come from other tokens than q."""
        layer, start, stop = self._rows('kv')
        return project_rows(layer, x, start, stop)

    def project_qkv(self, x: torch.Tensor, affine=None):
        """(B, N, C) -> q, k, v, each (B, h, N, d); ``affine``: (weight, bias) to use for a fused
        projection instead (:func:`~mmvitattn.attention.projections.batch_affine`)."""
        b, n, c = x.shape
        if self.qkv_layout != 'q_kv':
            qkv = self.qkv(x) if affine is None else F.linear(x, *affine)
            qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            return qkv.unbind(0)
        kv = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return (self.split_heads(self.q(x)), *kv.unbind(0))

    def project_tokens(self, x: torch.Tensor):
        """(B, N, C) -> q, k, v, each (B, N, C): column views of the projection output, no copy.
        ``t.view(B, N, h, d)`` splits heads without a transpose."""
        c = self.dim
        if self.qkv_layout != 'q_kv':
            return self.qkv(x).split(c, dim=-1)
        return (self.q(x), *self.kv(x).split(c, dim=-1))

    def project_separately(self, x: torch.Tensor, parts: str = 'qkv'):
        """The ``parts`` of q, k, v (B, N, C), in that order, each its own product and so contiguous,
        with the values :meth:`project_tokens` gives (whose column views have a 3C row stride:
        per-token norms, channels-last convs and token-major products then read strided rows)."""
        c = self.dim
        (q_layer, q_start, _), (kv_layer, k_start, _) = self._rows('q'), self._rows('kv')
        rows = {'q': (q_layer, q_start), 'k': (kv_layer, k_start), 'v': (kv_layer, k_start + c)}
        return [project_rows(layer, x, start, start + c) for layer, start in (rows[p] for p in parts)]

    def kv_mean(self, x_mean: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[mean(k) | mean(v)] (B, 2C) over the real tokens, in ``x_mean``'s dtype. An affine
        projection gives it from ``x_mean`` (B, C), the token mean of its input (mean(x W^T + b) =
        mean(x) W^T + b); otherwise (BatchNorm on batch statistics) it is taken over k and v."""
        layer, start, stop = self._rows('kv')
        affine = affine_rows(layer, start, stop)
        if affine is not None:
            weight, bias = affine
            return F.linear(x_mean, weight.to(x_mean.dtype), None if bias is None else bias.to(x_mean.dtype))
        kv = torch.cat([k, v], dim=-1).to(x_mean.dtype)
        if pad_mask is None:
            return kv.mean(dim=1)
        real = (~pad_mask).to(x_mean.dtype)[:, None, :]  # (B, 1, N)
        return (real @ kv).squeeze(1) / real.sum(dim=-1).clamp_min(1)

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N, C) attention result -> projected block output."""
        return self.proj_drop(self.proj(y))


LOW_PRECISION = (torch.float16, torch.bfloat16)


def float32_region(t: torch.Tensor):
    """A context in which autocast is off, for reductions that must stay in float32 (sums over
    all N tokens overflow float16 and lose bits in bfloat16); a no-op outside autocast."""
    device = t.device.type
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def to_float32(*ts: torch.Tensor):
    """Cast float16/bfloat16 tensors to float32 (others unchanged)."""
    return tuple(t.float() if t.dtype in LOW_PRECISION else t for t in ts)


def channels_last_map(tokens: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens (any row stride) -> (B, C, H, W) in channels-last memory: the one copy a
    depthwise conv needs, with no transpose (the tokens already are channels-last rows)."""
    b, _, c = tokens.shape
    grid = tokens.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
    return grid.contiguous(memory_format=torch.channels_last)


def channels_last_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C); a view when ``grid`` is in channels-last memory."""
    b, c = grid.shape[:2]
    return grid.permute(0, 2, 3, 1).reshape(b, -1, c)


def depthwise_conv_tokens(tokens: torch.Tensor, hw: Tuple[int, int], weight: torch.Tensor,
                          padding) -> torch.Tensor:
    """Depthwise conv (weight (C, 1, kh, kw), no bias) of (B, H*W, C) tokens laid out as an H x W
    map; returns (B, H*W, C). Runs in channels-last memory, so no (C, H*W) transpose is made."""
    layout = (lambda t: channels_last_map(t, hw)), (lambda grid, b: channels_last_tokens(grid))
    return conv_on_tokens(tokens, weight.to(tokens.dtype), None, padding, weight.shape[0], layout)


def custom_backward_wanted(*ts: Optional[torch.Tensor]) -> bool:
    """Whether to run through a Python autograd function: a gradient is needed and nothing traces
    the call (such a function is opaque to the tracers)."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)
    return needs_grad and not torch.jit.is_tracing()


def conv_on_tokens(tokens: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding,
                   groups: int, layout) -> torch.Tensor:
    """``F.conv2d`` on a map made from (B, N, C) token rows, returned as token rows. ``layout`` is the
    pair (to_grid(tokens), to_tokens(grid, B)): one copy into the conv's memory format and a view back.
    When a gradient is needed the conv runs through :class:`TokenGridConv`."""
    to_grid, to_tokens = layout
    if custom_backward_wanted(tokens, weight, bias):
        out = TokenGridConv.apply(tokens, weight, bias, padding, groups, layout)
    else:
        out = F.conv2d(to_grid(tokens), weight, bias, padding=padding, groups=groups)
    return to_tokens(out, tokens.shape[0])


class TokenGridConv(torch.autograd.Function):
    """The conv of :func:`conv_on_tokens` (returning its grid) with a backward that remakes the grid
    copy of the tokens instead of keeping it. The tokens (V) are kept by the attention's products
    anyway, so the conv adds no saved tensor of its own (InLine, DeiT-S training step at 512x512:
    6% less peak memory)."""

    @staticmethod
    def forward(ctx, tokens, weight, bias, padding, groups, layout):
        ctx.save_for_backward(tokens, weight)
        ctx.conv, ctx.layout, ctx.has_bias = (padding, groups), layout, bias is not None
        return F.conv2d(layout[0](tokens), weight, bias, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, grad):
        tokens, weight = ctx.saved_tensors
        (padding, groups), (to_grid, to_tokens) = ctx.conv, ctx.layout
        need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        g_in, g_weight, g_bias = torch.ops.aten.convolution_backward(
            grad, to_grid(tokens), weight, [weight.shape[0]] if ctx.has_bias else None,
            [1, 1], list(_pair(padding)), [1, 1], False, [0, 0], groups, need)
        g_tokens = to_tokens(g_in, tokens.shape[0]) if need[0] else None
        return g_tokens, g_weight, g_bias if need[2] else None, None, None, None
