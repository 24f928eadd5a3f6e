"""The mask rule of Castling-ViT's auxiliary branch: A_ij > tau / N_real ('relative', default) or
A_ij > tau ('absolute', the release), checked against explicit per-image references."""
import pytest
import torch

from mmvitattn.attention import build_attention
from mmvitattn.attention.castling import mask_cut

C, HEADS, H, W = 32, 2, 5, 7
D = C // HEADS


def mixer_for(mode, tau, std=0.4, chunk=8):
    torch.manual_seed(0)
    mixer = build_attention('castling', C, HEADS, aux_softmax=True, aux_threshold=tau, aux_threshold_mode=mode,
                            aux_chunk=chunk).double().train()
    with torch.no_grad():  # far from uniform attention, so the cut falls inside the weights' range
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * std)
    return mixer


def padded_batch():
    """Image 0 uses the whole 5 x 7 grid; image 1 only its top-left 3 x 4 (12 of 35 tokens)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, H * W, C, generator=g, dtype=torch.float64)
    pad = torch.ones(2, H, W, dtype=torch.bool)
    pad[0] = False
    pad[1, :3, :4] = False
    return x, pad.flatten(1)


def reference(q, k, v, real, cut_of):
    """sum_j S_ij v_j over the real tokens of one image only, S = A * [A > cut_of(N_real)]."""
    q, k, v = q[:, real], k[:, real], v[:, real]
    attn = torch.softmax(q @ k.transpose(-2, -1) * D**-0.5, dim=-1)
    mask = attn > cut_of(int(real.sum()))
    return (attn * mask) @ v, int(mask.sum())


@pytest.mark.parametrize('mode, tau', [('relative', 1.0), ('relative', 2.5), ('absolute', 0.05)])
def test_mask_rule_against_a_per_image_reference(mode, tau):
    mixer = mixer_for(mode, tau)
    x, pad = padded_batch()
    with torch.no_grad():
        q, k, v = mixer.project_qkv(x)
        out = mixer.masked_softmax(q, k, v, pad)
    cut_of = (lambda n: tau / n) if mode == 'relative' else (lambda n: tau)
    kept = 0
    for b in range(2):
        real = ~pad[b]
        expected, kept_b = reference(q[b], k[b], v[b], real, cut_of)
        kept += kept_b
        # The real query rows see exactly what the image sees alone, cut included.
        torch.testing.assert_close(out[b][:, real], expected, rtol=1e-12, atol=1e-12)
    # Density: over (real query, real key) pairs of all images and heads.
    assert mixer.last_mask_density == kept / (HEADS * (35**2 + 12**2))
    assert 0 < mixer.last_mask_density < 1
    if mode == 'relative':
        # The padded image's cut uses its 12 real keys: with all 35 grid tokens it would differ.
        wrong, _ = reference(q[1], k[1], v[1], ~pad[1], lambda n: tau / (H * W))
        assert not torch.allclose(out[1][:, ~pad[1]], wrong)


def test_cut_values():
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[1, 6:] = True
    pad[2, 1:] = True
    cut = mask_cut(2.0, 'relative', pad, 10, torch.float32, 'cpu')
    assert cut.shape == (3, 1, 1, 1) and cut.dtype == torch.float32
    assert cut.flatten().tolist() == pytest.approx([2 / 10, 2 / 6, 2 / 1])
    assert mask_cut(2.0, 'relative', None, 10, torch.float32, 'cpu') == pytest.approx(0.2)
    assert mask_cut(0.02, 'absolute', pad, 10, torch.float32, 'cpu') == 0.02


@pytest.mark.parametrize('n', [4, 20, 80, 320])
def test_relative_density_stays_below_one_over_tau_at_every_size(n):
    """Fewer than N / tau weights of a row summing to 1 can exceed tau / N."""
    x = torch.randn(2, n, C, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    densities = []
    for tau in (1.0, 1.5, 3.0, 6.0):
        mixer = mixer_for('relative', tau, std=0.2)
        with torch.no_grad():
            mixer(x, (1, n))
        assert mixer.last_mask_density < 1 / tau, (n, tau, mixer.last_mask_density)
        densities.append(mixer.last_mask_density)
    assert densities[0] > 0.1  # a populated mask at tau = 1 that thins as tau grows
    assert all(a >= b for a, b in zip(densities, densities[1:])) and densities[-1] < densities[0]


def test_absolute_threshold_cannot_thin_a_small_map():
    """The release's tau = 0.02 on 20 keys (mean weight 0.05): nearly every weight of a
    near-uniform attention passes; the relative rule at a comparable strictness does not."""
    n = 20
    x = torch.randn(2, n, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    absolute, relative = mixer_for('absolute', 0.02, std=0.1), mixer_for('relative', 4.0, std=0.1)
    with torch.no_grad():
        absolute(x, (4, 5))
        relative(x, (4, 5))
    assert absolute.last_mask_density > 0.9
    assert relative.last_mask_density < 0.25


@pytest.mark.parametrize('kwargs, message', [
    (dict(aux_threshold_mode='topk'), "unknown aux_threshold_mode 'topk'; expected 'relative'"),
    (dict(aux_threshold=-0.5), 'aux_threshold must be a finite number >= 0, got -0.5'),
    (dict(aux_threshold=float('inf')), 'got inf'),
    (dict(aux_threshold=1.0, aux_threshold_mode='absolute'),
     r"aux_threshold 1.0 with aux_threshold_mode='absolute' masks out every weight; expected .* \[0, 1\)"),
])
def test_invalid_threshold_fails_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_attention('castling', C, HEADS, aux_softmax=True, **kwargs)


def test_invalid_threshold_set_later_fails_at_the_forward():
    mixer = mixer_for('absolute', 0.02)
    mixer.aux_threshold = 3.0
    with pytest.raises(ValueError, match="aux_threshold 3.0 with aux_threshold_mode='absolute'"):
        mixer(*padded_batch()[:1], (H, W))
