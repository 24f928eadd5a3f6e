"""Every token mixer against an explicit N x N reference written from its formula.

Inputs are float64 and random, the token map is non-square, and a batch mixes a full image with
one whose real content is only a top-left part of the grid (as mmdet's batch padding makes it).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmvitattn.attention import ATTENTIONS, build_attention

H, W, C, HEADS = 5, 7, 64, 2  # head dim 32, as in the released InLine models
D = C // HEADS


def linear(x, layer):
    return x @ layer.weight.T + layer.bias


def qkv_of(mixer, x):
    """Per-head q, k, v (h, N, d) of one image, straight from the projection weights."""
    def heads(t):
        return t.reshape(t.shape[0], HEADS, D).transpose(0, 1)

    if hasattr(mixer, 'qkv'):
        q, k, v = linear(x, mixer.qkv).chunk(3, dim=-1)
    else:
        q = linear(x, mixer.q)
        k, v = linear(x, mixer.kv).chunk(2, dim=-1)
    return heads(q), heads(k), heads(v)


def merge(t):
    return t.transpose(0, 1).reshape(t.shape[1], C)


def make_batch(valid_hw=(3, 4), prefix=0, seed=0):
    """Two images on an H x W grid (+ prefix tokens): image 0 full, image 1 real only in valid_hw."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, prefix + H * W, C, generator=g, dtype=torch.float64)
    grid_pad = torch.ones(H, W, dtype=torch.bool)
    grid_pad[:valid_hw[0], :valid_hw[1]] = False
    pad = torch.zeros(2, prefix + H * W, dtype=torch.bool)
    pad[1, prefix:] = grid_pad.flatten()
    return x, pad


def build(name, **kw):
    torch.manual_seed(0)
    mixer = build_attention(name, C, HEADS, **kw).double().eval()
    # Random (not default-initialised) weights everywhere so no term can hide behind zeros.
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return mixer


def real_region(x, valid_hw, prefix=0):
    """Tokens of the top-left valid_hw part of the grid (+ prefix tokens) of one image."""
    grid = x[prefix:].reshape(H, W, -1)[:valid_hw[0], :valid_hw[1]].reshape(-1, x.shape[-1])
    return torch.cat([x[:prefix], grid])


# --- references, one image at a time, written from the papers' formulas ----------------------

def softmax_reference(mixer, x, hw):
    q, k, v = qkv_of(mixer, x)
    attn = torch.softmax(q @ k.transpose(-2, -1) * D**-0.5, dim=-1)
    return linear(merge(attn @ v), mixer.proj)


def armour_reference(mixer, x, hw):
    k, v = linear(x, mixer.kv).reshape(x.shape[0], 2, HEADS, D).permute(1, 2, 0, 3)
    attn = torch.softmax(v @ k.transpose(-2, -1) * D**-0.5, dim=-1)  # W_Q = W_V
    return linear(merge(attn @ v), mixer.proj)


def inline_weights(q, k):
    """InL_K(Q_i)_j with phi = identity and s/N folded in: an explicit N x N matrix per head."""
    n = k.shape[-2]
    s = D**-0.5
    dots = q @ k.transpose(-2, -1) * s / n
    return dots - dots.sum(dim=-1, keepdim=True) / n + 1.0 / n


def dynamic_conv_reference(mixer, x, v_map, hw):
    """3x3 per-image depthwise conv of V with zero padding, written as explicit shifted sums."""
    h, w = hw
    kernel = mixer.residual(x.mean(dim=0)[None, :, None])[0].reshape(C, 3, 3)
    grid = v_map.reshape(h, w, C)
    out = torch.zeros_like(grid)
    for di in range(3):
        for dj in range(3):
            for i in range(h):
                for j in range(w):
                    si, sj = i + di - 1, j + dj - 1
                    if 0 <= si < h and 0 <= sj < w:
                        out[i, j] += kernel[:, di, dj] * grid[si, sj]
    return out.reshape(h * w, C)


def inline_reference(mixer, x, hw):
    q, k, v = qkv_of(mixer, x)
    y = merge(inline_weights(q, k) @ v)
    prefix = x.shape[0] - hw[0] * hw[1]
    y[prefix:] += dynamic_conv_reference(mixer, x, merge(v)[prefix:], hw)
    return linear(y, mixer.proj)


def castling_reference(mixer, x, hw, pad=None, coef=0.0, tau=0.02, mode='absolute'):
    """Linear-angular attention as an N x N matrix: (0.5 I + Q^ K^^T / pi) V, plus the
    thresholded softmax branch, row-normalised, plus the (9, 1) token-axis depthwise conv of V.
    ``pad`` marks padded tokens: they are no keys and their v is zero. The branch keeps softmax
    weights above ``tau`` ('absolute') or above ``tau`` / (number of real keys) ('relative')."""
    q, k, v = qkv_of(mixer, x)
    n = x.shape[0]
    real = torch.ones(n, dtype=torch.float64) if pad is None else (~pad).double()
    v = v * real[:, None]
    qh, kh = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    lin = 0.5 * torch.eye(n, dtype=torch.float64) + (qh @ kh.transpose(-2, -1)) / math.pi * real
    y = lin @ v
    if coef:
        logits = (q @ k.transpose(-2, -1) * D**-0.5).masked_fill(real == 0, float('-inf'))
        attn = torch.softmax(logits, dim=-1)
        cut = tau if mode == 'absolute' else tau / real.sum()
        y = y + coef * (attn * (attn > cut)) @ v
    y = F.normalize(y, dim=-1)
    weight = mixer.dconv.weight[:, 0, :, 0]  # (heads, 9)
    r = weight.shape[1] // 2
    conv = torch.zeros_like(v)
    for t in range(n):
        for o in range(-r, r + 1):
            if 0 <= t + o < n:
                conv[:, t] += weight[:, o + r, None] * v[:, t + o]
    return linear(merge(y + conv), mixer.proj)


def sra_reference(mixer, x, hw):
    q = linear(x, mixer.q).reshape(-1, HEADS, D).transpose(0, 1)
    r = mixer.sr_ratio
    grid = x.T.reshape(1, C, *hw)
    reduced = F.conv2d(grid, mixer.sr.weight, mixer.sr.bias, stride=r)[0].flatten(1).T
    reduced = F.layer_norm(reduced, (C, ), mixer.norm.weight, mixer.norm.bias)
    k, v = linear(reduced, mixer.kv).reshape(-1, 2, HEADS, D).permute(1, 2, 0, 3)
    attn = torch.softmax(q @ k.transpose(-2, -1) * D**-0.5, dim=-1)
    return linear(merge(attn @ v), mixer.proj)


REFERENCES = {
    'softmax': (dict(), softmax_reference),
    'armour': (dict(), armour_reference),
    'inline': (dict(), inline_reference),
    'inline_q_kv': (dict(qkv_layout='q_kv'), inline_reference),
}


@pytest.fixture(params=['q_product', 'folded_query'])
def inline_path(request, monkeypatch):
    """Run InLine through each of its two equal computations (q @ KV, or KV folded into the query
    projection, which it picks by size), whatever the test's map size."""
    from mmvitattn.attention.inline import InLineAttention
    from mmvitattn.attention.projections import affine_rows
    if request.param == 'q_product':
        monkeypatch.setattr(InLineAttention, 'foldable_query', lambda self, n: None)
    else:
        monkeypatch.setattr(InLineAttention, 'foldable_query', lambda self, n: affine_rows(*self._rows('q')))
    return request.param


@pytest.mark.parametrize('case', sorted(REFERENCES))
@pytest.mark.parametrize('prefix', [0, 1])
def test_matches_reference_alone_and_batched_with_padding(case, prefix, inline_path):
    kwargs, reference = REFERENCES[case]
    mixer = build(case.split('_')[0], **kwargs)
    valid = (3, 4)
    x, pad = make_batch(valid, prefix)
    with torch.no_grad():
        out = mixer(x, (H, W), pad)
        full = reference(mixer, x[0], (H, W))
        # The padded image's real tokens must see exactly what they see when it runs alone.
        alone = reference(mixer, real_region(x[1], valid, prefix), valid)
    torch.testing.assert_close(out[0], full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(real_region(out[1], valid, prefix), alone, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('layout', ['qkv', 'q_kv'])
def test_castling_matches_released_core_and_nxn_form(layout):
    mixer = build('castling', qkv_layout=layout)
    x, pad = make_batch()
    with torch.no_grad():
        out = mixer(x, (H, W), pad)
    # Real tokens of each image: the N x N form over that image's real tokens alone (the
    # token-axis conv runs over the image's own sequence, as when it is not batched).
    for b in range(2):
        real = ~pad[b]
        torch.testing.assert_close(out[b][real], castling_reference(mixer, x[b][real], (H, W)),
                                   rtol=1e-10, atol=1e-10)


def test_castling_released_core_algebra():
    """The released core's sequence of operations, written out, equals the module."""
    mixer = build('castling')
    x, _ = make_batch()
    with torch.no_grad():
        q, k, v = mixer.project_qkv(x)
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
        y = 0.5 * v + (1 / math.pi) * (q @ (k.transpose(-2, -1) @ v))
        y = y / y.norm(dim=-1, keepdim=True)
        y = y + mixer.dconv(v)
        expected = mixer.proj(y.transpose(1, 2).reshape(x.shape))
        torch.testing.assert_close(mixer(x, (H, W)), expected, rtol=1e-10, atol=1e-10)


def test_castling_expansion_form_uses_the_sum_of_values():
    mixer = build('castling', constant_term='sum')
    x, _ = make_batch()
    with torch.no_grad():
        q, k, v = mixer.project_qkv(x)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        y = 0.5 * v.sum(dim=-2, keepdim=True) + q @ (k.transpose(-2, -1) @ v) / math.pi
        y = F.normalize(y, dim=-1) + mixer.dconv(v)
        torch.testing.assert_close(mixer(x, (H, W)), mixer.proj(y.transpose(1, 2).reshape(x.shape)))


@pytest.mark.parametrize('mode, tau', [('absolute', 0.02), ('relative', 1.5)])
@pytest.mark.parametrize('coef', [1.0, 0.4])
def test_castling_auxiliary_branch_matches_reference(coef, mode, tau):
    # Chunks that do not divide N; image 1 is padded (12 of 35 keys real), so a relative cut
    # differs between the two images.
    mixer = build('castling', aux_softmax=True, aux_chunk=8, aux_threshold=tau, aux_threshold_mode=mode)
    mixer.train()
    mixer.aux_coef = coef
    x, pad = make_batch()
    with torch.no_grad():
        out = mixer(x, (H, W), pad)
    assert 0 < mixer.last_mask_density < 1
    for b in range(2):
        real = ~pad[b]  # the padded image's real tokens equal the image run alone
        torch.testing.assert_close(
            out[b][real], castling_reference(mixer, x[b][real], (H, W), coef=coef, tau=tau, mode=mode),
            rtol=1e-10, atol=1e-10)


def graph_node_names(t):
    """Names of the autograd nodes ``t`` was computed through."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
    return {type(n).__name__ for n in seen}


@pytest.mark.parametrize('padded', [False, True])
def test_castling_gradients_match_the_plain_formula(padded):
    """Gradients through the module (its linear-angular core and token conv have backwards of their
    own) against autograd of the explicit N x N formula, per image, in float64; with ``padded``,
    image 1 is real only in a 3 x 4 corner (the conv then runs on the packed tokens)."""
    mixer = build('castling')
    x, pad = make_batch()
    pad = pad if padded else torch.zeros_like(pad)
    x.requires_grad_(True)
    cot = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = mixer(x, (H, W), pad)
    assert {'LinearAngularBackward', 'TokenGridConvBackward'} <= graph_node_names(out)  # what is tested
    params = list(mixer.parameters())
    grads = torch.autograd.grad((out * cot * (~pad)[..., None]).sum(), [x, *params])
    ref = sum((castling_reference(mixer, x[b][~pad[b]], (H, W)) * cot[b][~pad[b]]).sum() for b in range(2))
    for got, want in zip(grads, torch.autograd.grad(ref, [x, *params])):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('constant_term', ['self', 'sum'])
def test_castling_core_backward_passes_gradcheck(constant_term):
    """The core's backward (recomputing q^, k^ and y) against finite differences."""
    from mmvitattn.attention.castling import LinearAngular
    g = torch.Generator().manual_seed(2)
    q, k, v, base = (torch.randn(2, 5, 8, generator=g, dtype=torch.float64) for _ in range(4))
    inputs = [t.requires_grad_(True) for t in (q, k, v, base)]
    assert torch.autograd.gradcheck(
        lambda q, k, v, base: LinearAngular.apply(q, k, v, base.clone(), 2, constant_term), inputs)


def test_castling_auxiliary_branch_off_outside_training():
    mixer = build('castling', aux_softmax=True)
    x, _ = make_batch()
    with torch.no_grad():
        eval_out = mixer.eval()(x, (H, W))
        mixer.train()
        mixer.aux_coef = 0.0
        zero_coef_out = mixer(x, (H, W))
        mixer.aux_coef = 1.0
        on_out = mixer(x, (H, W))
    torch.testing.assert_close(eval_out, zero_coef_out, rtol=0, atol=0)
    assert not torch.allclose(on_out, eval_out)


def test_sra_matches_reference():
    mixer = build('sra', sr_ratio=2)
    x = torch.randn(1, 6 * 8, C, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, (6, 8))[0], sra_reference(mixer, x[0], (6, 8)))


def test_sra_ratio_one_is_global_softmax():
    mixer = build('sra', sr_ratio=1)
    x, pad = make_batch()
    with torch.no_grad():
        out = mixer(x, (H, W), pad)
    torch.testing.assert_close(out[0], softmax_reference(mixer, x[0], (H, W)))


def test_inline_weight_rows_sum_to_one():
    """Through the module: with a constant V, no local residual and proj = identity, every token's
    output is that constant, whatever the queries and keys are -- the weights of each row sum to 1."""
    mixer = build('inline')
    const = torch.randn(C, dtype=torch.float64)
    with torch.no_grad():
        mixer.qkv.weight[2 * C:] = 0
        mixer.qkv.bias[2 * C:] = const
        mixer.residual[2].weight.zero_()
        mixer.residual[2].bias.zero_()
        mixer.proj.weight.copy_(torch.eye(C))
        mixer.proj.bias.zero_()
        x, pad = make_batch()
        out = mixer(x, (H, W), pad)
    real = ~pad
    torch.testing.assert_close(out[real], const.expand(int(real.sum()), C))
    q, k, _ = qkv_of(mixer, x[0])
    torch.testing.assert_close(inline_weights(q, k).sum(-1), torch.ones(HEADS, H * W, dtype=torch.float64))


def test_armour_has_two_thirds_of_the_projection_parameters():
    def projection_params(mixer):
        return sum(p.numel() for name, p in mixer.named_parameters() if not name.startswith('proj'))

    softmax, armour = build('softmax'), build('armour')
    assert projection_params(armour) * 3 == projection_params(softmax) * 2
    assert projection_params(softmax) == 3 * (C * C + C)


def test_every_mechanism_is_registered():
    assert {'softmax', 'sra', 'inline', 'castling', 'armour'} <= set(ATTENTIONS)


def test_bad_names_and_head_counts_fail_with_the_value():
    with pytest.raises(ValueError, match="'linformer'"):
        build_attention('linformer', C, HEADS)
    with pytest.raises(ValueError, match='num_heads=3 does not divide the embedding width 64'):
        build_attention('inline', C, 3)
    mixer = build('inline')
    with pytest.raises(ValueError, match='token map 9x9'):
        mixer(torch.randn(1, 10, C, dtype=torch.float64), (9, 9))


def test_inline_exported_residual_is_the_dynamic_conv():
    """The residual's export form (shifted multiply-adds, any batch) against the explicit conv."""
    from mmvitattn.attention.inline import shifted_sum_conv
    mixer = build('inline')
    x, _ = make_batch()
    v = torch.randn(2, H * W, C, dtype=torch.float64)
    with torch.no_grad():
        kernels = mixer.residual(x.mean(dim=1)[..., None]).reshape(2, C, 9)
        out = shifted_sum_conv(v, kernels, (H, W))
        for i in range(2):
            torch.testing.assert_close(out[i], dynamic_conv_reference(mixer, x[i], v[i], (H, W)))


def test_inline_folds_the_query_only_where_it_pays():
    """KV is folded into q's projection when the tokens outnumber the channels (N C d > C^2 d) and
    q's projection is affine; LeViT's BN-linear in training (batch statistics) is not."""
    mixer = build('inline')
    assert mixer.foldable_query(C) is None
    weight, bias = mixer.foldable_query(C + 1)
    assert weight.shape == (C, C) and bias.shape == (C, )
    levit = build_attention('inline', C, HEADS, qkv_layout='bn_qkv')
    assert levit.train().foldable_query(C + 1) is None
    assert levit.eval().foldable_query(C + 1) is not None


def test_inline_gradients_match_the_plain_formula_on_a_padded_batch(inline_path):
    """Gradients through the module (its local conv has a backward of its own) against autograd of
    the explicit per-image formula, in float64, with one image padded; plus gradcheck of the conv."""
    from mmvitattn.attention.inline import batch_depthwise_conv
    valid = (3, 4)
    mixer = build('inline')
    x, pad = make_batch(valid)
    x.requires_grad_(True)
    cot = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = list(mixer.parameters())
    loss = (mixer(x, (H, W), pad) * cot * (~pad)[..., None]).sum()
    grads = torch.autograd.grad(loss, [x, *params])
    ref = ((inline_reference(mixer, x[0], (H, W)) * cot[0]).sum()
           + (inline_reference(mixer, real_region(x[1], valid), valid) * real_region(cot[1], valid)).sum())
    for got, want in zip(grads, torch.autograd.grad(ref, [x, *params])):
        torch.testing.assert_close(got, want)
    v = torch.randn(2, 3 * 4, 6, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(2 * 3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2 * 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, k, b: batch_depthwise_conv(t[..., 3:], k, b, (3, 4)), (v, kernels, bias))
