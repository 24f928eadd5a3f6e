"""Mixed precision: every token mixer under CPU autocast (bfloat16, and float16 where the sums over
all N tokens would overflow if they were taken in half precision) at a large token count gives
finite outputs and input gradients within a stated tolerance of float32.

The inputs have a non-zero mean, as real activations do, so K^T V and the value sums grow with N;
one test makes them exceed float16's range (65504) at 64 x 64 tokens.
"""
import pytest
import torch

from mmvitattn.attention import build_attention

H, W, C, HEADS = 64, 64, 64, 2
# Relative L2 error of the output and of the input gradient against float32. bfloat16 keeps 8
# bits of mantissa (relative rounding 2^-9 per operand), float16 11 bits; the bounds leave about
# 4x headroom over what the mixers reach, and are far below the error of an overflow or NaN.
TOLERANCE = {torch.bfloat16: 0.05, torch.float16: 0.01}


def make_mixer(name):
    torch.manual_seed(0)
    mixer = build_attention(name, C, HEADS)
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return mixer


def run(mixer, x, pad_mask=None, dtype=None):
    x = x.clone().requires_grad_()
    if dtype is None:
        y = mixer(x, (H, W), pad_mask)
    else:
        with torch.autocast('cpu', dtype=dtype):
            y = mixer(x, (H, W), pad_mask)
    # A loss that weights every output element differently, so the gradient is not trivial.
    weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    (y.float() * weights).sum().backward()
    return y.detach().float(), x.grad


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def inputs(offset=3.0, prefix=1):
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, prefix + H * W, C, generator=g) * 2 + offset


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
@pytest.mark.parametrize('name', ['inline', 'castling', 'armour', 'softmax'])
def test_autocast_forward_backward_close_to_float32(name, dtype):
    mixer = make_mixer(name)
    x = inputs()
    ref_y, ref_grad = run(mixer, x)
    y, grad = run(mixer, x, dtype=dtype)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    assert rel_err(y, ref_y) < TOLERANCE[dtype], (name, dtype, rel_err(y, ref_y))
    assert rel_err(grad, ref_grad) < TOLERANCE[dtype] * 2, (name, dtype, rel_err(grad, ref_grad))
    # The parameters got finite gradients too.
    for p in mixer.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize('name', ['inline', 'castling'])
def test_float16_sums_over_tokens_do_not_overflow(name):
    """Inputs whose sums over the N tokens (InLine: K^T V; Castling: k^^T V) are beyond float16's
    range: a half-precision reduction gives inf/NaN; ours stay finite and close to float32."""
    mixer = make_mixer(name)
    x = inputs(offset=8.0 if name == 'inline' else 16.0)
    with torch.no_grad():  # the premise
        q, k, v = mixer.project_tokens(x)
        if name == 'castling':  # Castling sums unit keys times values
            k = torch.nn.functional.normalize(k.reshape(-1, HEADS, C // HEADS), dim=-1).reshape(k.shape)
        assert (k[0].T @ v[0]).abs().max() > torch.finfo(torch.float16).max
    ref_y, _ = run(mixer, x)
    y, grad = run(mixer, x, dtype=torch.float16)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    assert rel_err(y, ref_y) < TOLERANCE[torch.float16], rel_err(y, ref_y)


@pytest.mark.parametrize('name', ['inline', 'castling'])
def test_autocast_with_padding_mask(name):
    """The padded path (masked means and sums) under bfloat16 autocast: finite and close to float32."""
    mixer = make_mixer(name)
    x = inputs()
    pad = torch.zeros(1, x.shape[1], dtype=torch.bool)
    pad[0, 1 + H * W // 2:] = True
    ref_y, _ = run(mixer, x, pad)
    y, grad = run(mixer, x, pad, dtype=torch.bfloat16)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    real = ~pad[0]
    assert rel_err(y[:, real], ref_y[:, real]) < TOLERANCE[torch.bfloat16]


def test_cswin_inline_branch_float16_sums_do_not_overflow():
    """InLine-CSwin's own InLine branch takes its sums over the tokens in float32 as well."""
    from mmvitattn.backbones.cswin import InLineLePEAttention
    torch.manual_seed(0)
    branch = InLineLePEAttention(C, HEADS)
    with torch.no_grad():
        for p in branch.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, H * W, C, generator=g) * 2 + 8 for _ in range(3))
    assert (k[0].T @ v[0]).abs().max() > torch.finfo(torch.float16).max  # the premise
    x_mean = torch.randn(1, C, generator=g)
    ref = branch(q, k, v, (H, W), x_mean)
    with torch.autocast('cpu', dtype=torch.float16):
        y = branch(q.half(), k.half(), v.half(), (H, W), x_mean)
    assert torch.isfinite(y).all()
    assert rel_err(y.float(), ref) < TOLERANCE[torch.float16]
