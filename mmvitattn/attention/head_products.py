"""The per-head matrix products of linear attention, on (B, N, C) token rows.

Linear attention reduces the tokens to a d x d matrix per head (K_h^T V_h) and multiplies each
head of the queries by it. Both products are written here for tokens kept as (B, N, C) rows
(columns of a projection's output, or any tensor whose rows hold the heads side by side): head h
is columns h*d .. (h+1)*d, split by ``view``. Per image the h heads are one strided batch axis,
which ``bmm`` / ``baddbmm_`` take as they are, so neither the operands nor the result is copied
into a (B, h, N, d) layout: the result comes out with the heads already merged. (``matmul`` over
(B, h) would first copy K and V, and a (B, h, N, d) result needs a copy to merge its heads.)
"""
from typing import Optional

import torch


def head_rows(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, N, h, d), a view: the heads of each token side by side, as they lie."""
    return t.view(*t.shape[:2], num_heads, -1)


def kt_v(k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """sum_n k_nh^T v_nh per head: k (B, N, C), v (B, N, C') row tensors (any row stride) with
    ``num_heads`` heads each; returns (B, h, C/h, C'/h)."""
    b = k.shape[0]
    kt = head_rows(k, num_heads).permute(0, 2, 3, 1)  # (B, h, d, N)
    vh = head_rows(v, num_heads).transpose(1, 2)  # (B, h, N, d')
    if torch.compiler.is_exporting():  # a loop over the images would fix the batch
        return kt @ vh
    return torch.stack([torch.bmm(kt[i], vh[i]) for i in range(b)])


def heads_times(x: torch.Tensor, m: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x_h m_h for every head, merged: x (B, N, C) rows (any row stride), m (B, h, C/h, C'/h) of the
    same dtype; returns (B, N, C'), or ``out`` (B, N, C') plus it.

    With no graph to record, each image's product is written straight into the result's head
    columns (``baddbmm_``: beta 0 into a new tensor, or beta 1 in place into ``out``). When a graph
    is recorded (or under export or tracing) the functional form is used: one batched product, a copy to
    merge the heads, and a new tensor for the sum (``out`` is left as it is)."""
    b, n, _ = x.shape
    h, d_out = m.shape[1], m.shape[-1]
    xh = head_rows(x, h).transpose(1, 2)  # (B, h, N, d)
    graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, m, out))
    if graph or torch.compiler.is_exporting() or torch.jit.is_tracing():  # tracers: no in-place writes into views
        y = torch.bmm(xh.reshape(b * h, n, -1), m.reshape(b * h, -1, d_out))  # views when b == 1
        y = y.view(b, h, n, d_out).transpose(1, 2).reshape(b, n, h * d_out)
        return y if out is None else out + y
    beta = 1
    if out is None:
        out, beta = x.new_empty(b, n, h * d_out), 0
    out_heads = head_rows(out, h).transpose(1, 2)
    for i in range(b):
        out_heads[i].baddbmm_(xh[i], m[i], beta=beta)
    return out
