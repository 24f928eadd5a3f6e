"""The per-head products of linear attention against the products written out per head."""
import pytest
import torch

from mmvitattn.attention.head_products import heads_times, kt_v

B, N, HEADS, D = 2, 11, 3, 4
C = HEADS * D


def columns(generator):
    """q, k, v as column views of one (B, N, 3C) projection output: rows with a 3C stride."""
    return torch.randn(B, N, 3 * C, generator=generator, dtype=torch.float64).split(C, dim=-1)


def per_head(t):
    return [t[..., h * D:(h + 1) * D] for h in range(HEADS)]


def test_kt_v_is_each_heads_k_transpose_v():
    q, k, v = columns(torch.Generator().manual_seed(0))
    want = torch.stack([kh.transpose(-2, -1) @ vh for kh, vh in zip(per_head(k), per_head(v))], dim=1)
    torch.testing.assert_close(kt_v(k, v, HEADS), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize('grad', [False, True], ids=['in-place', 'graph'])
@pytest.mark.parametrize('accumulate', [False, True], ids=['new', 'into-out'])
def test_heads_times_merges_each_heads_product(grad, accumulate):
    """Head h of the result is x_h m_h, in columns h*d .. (h+1)*d; with ``out`` it is added to it.
    Both paths (direct writes without a graph, the functional form with one) give it, and the
    functional form's gradients are those of the products written out."""
    g = torch.Generator().manual_seed(1)
    x = columns(g)[0].requires_grad_(grad)
    m = torch.randn(B, HEADS, D, D, generator=g, dtype=torch.float64, requires_grad=grad)
    base = torch.randn(B, N, C, generator=g, dtype=torch.float64)
    want = torch.cat([xh @ m[:, h] for h, xh in enumerate(per_head(x))], dim=-1)
    if accumulate:
        want = want + base
    out = base.clone() if accumulate else None
    with torch.set_grad_enabled(grad):
        got = heads_times(x, m, out=out)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert got.shape == (B, N, C) and got.is_contiguous()
    if accumulate and not grad:
        assert got is out  # accumulated in place
    if grad:
        cot = torch.randn(B, N, C, generator=g, dtype=torch.float64)
        for a, b in zip(torch.autograd.grad((got * cot).sum(), [x, m]), torch.autograd.grad((want * cot).sum(), [x, m])):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
