import ast
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmvitattn.attention.inline import InLineAttention
from mmvitattn.backbones.cswin import (CSwin, CSwinBlock, InLineCSwin, InLineLePEAttention, LePEAttention,
                                       SoftmaxCSwin)
from mmvitattn.registry import MODELS

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'inline_official_keys'

# The InLine paper: parameters with the 1000-class head, in millions.
INLINE_CSWIN_PARAMS = {'t': 20.60, 's': 33.03, 'b': 73.41}
TINY = dict(depths=(1, 1, 1, 1))
VARIANTS = [(InLineCSwin, 't'), (InLineCSwin, 's'), (InLineCSwin, 'b'), (SoftmaxCSwin, 't')]


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def fixture_layout(name):
    path = FIXTURES / f'{name}.tsv'
    rows = [line.split('\t') for line in path.read_text().splitlines() if line.strip()]
    return [(key, tuple(ast.literal_eval(shape))) for key, shape in rows]


@functools.lru_cache(maxsize=None)
def full_inline_cswin(arch, split_sizes=(1, 2, 7, None)):
    return InLineCSwin(arch=arch, num_classes=1000, split_sizes=split_sizes)


def expected_shapes(batch, widths, h, w):
    return [(batch, c, -(-h // s), -(-w // s)) for c, s in zip(widths, (4, 8, 16, 32))]


# ----------------------------------------------------------------------------------------------
# Explicit float64 references


def stripe_reference(branch, q, k, v, hw):
    """Loop over the stripes (the last one narrower when the map is not a multiple of the width):
    softmax(s q k^T) v per head, plus LePE = the branch's 3x3 depthwise conv of the stripe's V with
    zero padding at the stripe border."""
    b, n, c = q.shape
    h, w = hw
    heads, d = branch.num_heads, c // branch.num_heads
    s = branch.split_size
    if branch.mode == 'vertical':
        stripes = [(slice(0, h), slice(j, min(j + s, w))) for j in range(0, w, s)]
    elif branch.mode == 'horizontal':
        stripes = [(slice(i, min(i + s, h)), slice(0, w)) for i in range(0, h, s)]
    else:
        stripes = [(slice(0, h), slice(0, w))]
    qg, kg, vg = (t.reshape(b, h, w, c) for t in (q, k, v))
    out = torch.zeros(b, h, w, c, dtype=q.dtype)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for rows, cols in stripes:
        vs = vg[:, rows, cols]
        sh, sw = vs.shape[1:3]
        qs, ks, vh = (t[:, rows, cols].reshape(b, sh * sw, heads, d).transpose(1, 2) for t in (qg, kg, vg))
        attn = torch.softmax(qs @ ks.transpose(-2, -1) * d**-0.5, dim=-1)
        y = (attn @ vh).transpose(1, 2).reshape(b, sh, sw, c)
        lepe = F.conv2d(vs.permute(0, 3, 1, 2), branch.get_v.weight, branch.get_v.bias, padding=1, groups=c)
        out[:, rows, cols] = y + lepe.permute(0, 2, 3, 1)
        covered[rows, cols] += 1
    assert (covered == 1).all()  # the stripes tile the map exactly once
    return out.reshape(b, n, c)


def inline_lepe_reference(branch, q, k, v, hw, x_mean):
    """InLine weights written out as an N x N matrix (the InLine paper's injective weights:
    w_ij = (s/N) q_i.k_j - (s/N) q_i.mean(k) + 1/N), plus the static LePE conv, plus mmvitattn's InLine local residual
    (the shared InLineAttention module with the branch's kernel predictor)."""
    b, n, c = q.shape
    h, w = hw
    heads, d = branch.num_heads, c // branch.num_heads
    s = d**-0.5
    qh, kh, vh = (t.reshape(b, n, heads, d).transpose(1, 2) for t in (q, k, v))
    weights = (s / n) * qh @ kh.transpose(-2, -1) - (s / n) * qh @ kh.mean(2, keepdim=True).transpose(-2, -1) + 1 / n
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, heads, n, dtype=q.dtype))
    y = (weights @ vh).transpose(1, 2).reshape(b, n, c)
    grid = v.transpose(1, 2).reshape(b, c, h, w)
    static = F.conv2d(grid, branch.get_v.weight, branch.get_v.bias, padding=1, groups=c).flatten(2).transpose(1, 2)
    shared = InLineAttention(c, heads).double()
    shared.residual.load_state_dict(branch.residual.state_dict())
    return y + static + shared.local_residual(x_mean, v, hw)


# ----------------------------------------------------------------------------------------------
# Attention math


def centered_stripe_reference(branch, q, k, v, hw):
    """The official CSWin segmentation rule, written out: q, k, v zero-padded to whole stripes with
    the zeros split equally between both sides (top/left the smaller half), every stripe of the
    padded map attended with the zeros as ordinary keys, LePE on the padded stripe, then cropped."""
    b, n, c = q.shape
    h, w = hw
    s = branch.split_size
    wh, ww = {'vertical': (h, s), 'horizontal': (s, w), 'global': (h, w)}[branch.mode]
    ph, pw = -h % wh, -w % ww
    top, left = ph // 2, pw // 2
    padded = []
    for t in (q, k, v):
        grid = torch.zeros(b, h + ph, w + pw, c, dtype=t.dtype)
        grid[:, top:top + h, left:left + w] = t.reshape(b, h, w, c)
        padded.append(grid.reshape(b, -1, c))
    plain = LePEAttention(c, branch.num_heads, 'global').double()
    plain.get_v.load_state_dict(branch.get_v.state_dict())
    out = torch.zeros(b, h + ph, w + pw, c, dtype=q.dtype)
    for i in range(0, h + ph, wh):
        for j in range(0, w + pw, ww):
            window = [t.reshape(b, h + ph, w + pw, c)[:, i:i + wh, j:j + ww].reshape(b, -1, c) for t in padded]
            out[:, i:i + wh, j:j + ww] = stripe_reference(plain, *window, (wh, ww)).reshape(b, wh, ww, c)
    return out[:, top:top + h, left:left + w].reshape(b, n, c)


@pytest.mark.parametrize('mode, split', [('vertical', 3), ('horizontal', 3), ('vertical', 1), ('horizontal', 2),
                                         ('vertical', 20), ('global', None)])
@pytest.mark.parametrize('padding', ['center', 'end'])
def test_stripe_attention_matches_an_explicit_loop_over_stripes(mode, split, padding):
    torch.manual_seed(0)
    hw = (11, 13)  # not square, not a multiple of the stripe width
    branch = LePEAttention(32, 2, mode, split, stripe_padding=padding).double()
    with torch.no_grad():
        branch.get_v.bias.normal_()
    q, k, v = torch.randn(3, 2, hw[0] * hw[1], 32, dtype=torch.float64)
    reference = centered_stripe_reference if padding == 'center' else stripe_reference
    torch.testing.assert_close(branch(q, k, v, hw), reference(branch, q, k, v, hw))
    if mode == 'vertical' and split == 3:  # the two rules are different functions here
        other = stripe_reference if padding == 'center' else centered_stripe_reference
        assert (branch(q, k, v, hw) - other(branch, q, k, v, hw)).abs().max() > 1e-3


def test_cswin_block_gives_the_first_half_of_the_channels_vertical_stripes_and_the_second_horizontal():
    torch.manual_seed(0)
    hw = (9, 10)
    block = CSwinBlock(64, 4, 'cswin', split_size=4).double().eval()
    assert [a.mode for a in block.attns] == ['vertical', 'horizontal']
    assert [a.num_heads for a in block.attns] == [2, 2]
    x = torch.randn(2, hw[0] * hw[1], 64, dtype=torch.float64)
    q, k, v = block.qkv(block.norm1(x)).chunk(3, dim=-1)
    halves = [centered_stripe_reference(branch, q[..., s], k[..., s], v[..., s], hw)  # the default padding
              for branch, s in zip(block.attns, (slice(0, 32), slice(32, 64)))]
    y = x + block.proj(torch.cat(halves, dim=-1))
    expected = y + block.mlp(block.norm2(y), hw)
    torch.testing.assert_close(block(x, hw), expected)


def test_inline_lepe_branch_matches_the_explicit_formula_plus_static_conv():
    torch.manual_seed(0)
    hw = (7, 10)
    branch = InLineLePEAttention(64, 2).double()
    q, k, v = torch.randn(3, 2, hw[0] * hw[1], 64, dtype=torch.float64)
    x_mean = torch.randn(2, 64, dtype=torch.float64)
    torch.testing.assert_close(branch(q, k, v, hw, x_mean), inline_lepe_reference(branch, q, k, v, hw, x_mean))


def test_inline_block_predicts_the_kernel_from_the_block_input_before_norm1():
    """Block-level check against mmvitattn's own InLineAttention (same qkv/proj/residual weights):
    that module predicts its kernel from its (normalized) input, so swap in the kernel predicted
    from the raw block input and add the static LePE conv, both through the (linear) proj."""
    torch.manual_seed(0)
    hw = (6, 9)
    block = CSwinBlock(64, 2, 'inline').double().eval()
    branch = block.attns[0]
    shared = InLineAttention(64, 2).double()
    for name in ('qkv', 'proj', 'residual'):
        getattr(shared, name).load_state_dict(getattr(block if name != 'residual' else branch, name).state_dict())
    x = torch.randn(2, hw[0] * hw[1], 64, dtype=torch.float64) * 2 + 0.5
    normed = block.norm1(x)
    v = block.qkv(normed).chunk(3, dim=-1)[2]
    grid = v.transpose(1, 2).reshape(2, 64, *hw)
    lepe = F.conv2d(grid, branch.get_v.weight, branch.get_v.bias, padding=1, groups=64).flatten(2).transpose(1, 2)
    swap = shared.local_residual(x.mean(1), v, hw) - shared.local_residual(normed.mean(1), v, hw)
    y = x + shared(normed, hw) + (swap + lepe) @ block.proj.weight.T
    expected = y + block.mlp(block.norm2(y), hw)
    torch.testing.assert_close(block(x, hw), expected)
    # The raw-input mean matters: predicting from the normalized input gives a different answer.
    assert not torch.allclose(shared.local_residual(x.mean(1), v, hw), shared.local_residual(normed.mean(1), v, hw))


@pytest.mark.parametrize('cls', [InLineCSwin, SoftmaxCSwin])
def test_batch_padding_does_not_change_the_features_of_a_real_image(cls):
    torch.manual_seed(0)
    model = cls(arch='t', depths=(1, 1, 1, 1), split_sizes=(1, 2, 3, None), out_norm=True).double().eval()
    alone = torch.randn(1, 3, 45, 70, dtype=torch.float64)
    batch = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    batch[0] = 0
    batch[0, :, :45, :70] = alone[0]
    pad_mask = torch.ones(2, 64, 96, dtype=torch.bool)
    pad_mask[0, :45, :70] = False
    pad_mask[1] = False
    with torch.no_grad():
        ref = model(alone)
        outs = model(batch, pad_mask=pad_mask)
    for r, o in zip(ref, outs):
        assert torch.isfinite(o).all()
        torch.testing.assert_close(o[:1, :, :r.shape[2], :r.shape[3]], r)
        assert (o[0, :, r.shape[2]:] == 0).all() and (o[0, :, :, r.shape[3]:] == 0).all()
    with torch.no_grad():  # the other image is unaffected by being batched too
        torch.testing.assert_close(outs[-1][1:], model(batch[1:])[-1])


# ----------------------------------------------------------------------------------------------
# Official layouts and sizes


@pytest.mark.parametrize('arch', sorted(INLINE_CSWIN_PARAMS))
def test_inline_cswin_parameter_count_matches_paper(arch):
    assert abs(count_params(full_inline_cswin(arch)) / 1e6 - INLINE_CSWIN_PARAMS[arch]) < 0.005


@pytest.mark.parametrize('arch, fixture, split_sizes', [('t', 'cswin_t', (1, 2, 7, None)),
                                                        ('s', 'cswin_s', (1, 2, 7, None)),
                                                        ('b', 'cswin_b', (1, 2, 7, None)),
                                                        ('b', 'cswin_b_384', (1, 2, 12, None))])
def test_inline_cswin_state_dict_has_the_official_layout_in_order(arch, fixture, split_sizes):
    model = full_inline_cswin(arch, split_sizes)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == fixture_layout(fixture)


def test_an_official_checkpoint_loads_into_the_detection_backbone_dropping_only_norm_and_head():
    official = {k: torch.randn(shape) for k, shape in fixture_layout('cswin_t')}
    model = InLineCSwin(arch='t', out_norm=True)
    result = model.load_state_dict(official, strict=False)
    assert sorted(result.unexpected_keys) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert sorted(result.missing_keys) == sorted(f'out_norm{i}.{p}' for i in range(1, 5) for p in ('weight', 'bias'))
    torch.testing.assert_close(model.stage3[17].attns[1].get_v.weight, official['stage3.17.attns.1.get_v.weight'])


def test_softmax_cswin_t_is_the_cswin_baseline():
    model = SoftmaxCSwin(arch='t', num_classes=1000)
    # CSWin paper, Table: CSWin-T 23M; the released CSWin code builds 22.32M with this layout.
    assert abs(count_params(model) / 1e6 - 22.32) < 0.005
    assert [len(getattr(model, f'stage{i}')) for i in range(1, 5)] == [1, 2, 21, 1]
    keys = model.state_dict().keys()
    assert 'stage1.0.attns.1.get_v.weight' in keys and 'stage4.0.attns.1.get_v.weight' not in keys
    assert model.state_dict()['stage3.0.attns.0.get_v.weight'].shape == (128, 1, 3, 3)
    assert not any('residual' in k for k in keys)


# ----------------------------------------------------------------------------------------------
# Backbone behaviour


@pytest.mark.parametrize('size', [(224, 320), (200, 296)])
@pytest.mark.parametrize('cls, arch', VARIANTS)
def test_variants_run_forward_backward_at_strides_4_8_16_32(cls, arch, size):
    model = cls(arch=arch, **TINY)
    x = torch.randn(1, 3, *size, requires_grad=True)
    outs = model(x)
    widths = (96, 192, 384, 768) if arch == 'b' else (64, 128, 256, 512)
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, widths, *size)
    assert all(o.is_contiguous() for o in outs)
    sum(o.sum() for o in outs).backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (37, 61), (64, 33)])
def test_stem_and_merges_fit_any_input_size(size):
    model = InLineCSwin(arch='t', **TINY)
    outs = model(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == expected_shapes(2, model.embed_dims, *size)


def test_other_registered_attentions_plug_into_cswin_stages():
    model = CSwin(attention=('castling', 'armour', 'softmax', 'cswin'), **TINY)
    assert hasattr(model.stage1[0], 'attn') and not hasattr(model.stage1[0], 'attns')
    x = torch.randn(1, 3, 48, 80)
    pad_mask = torch.zeros(1, 48, 80, dtype=torch.bool)
    outs = model(x, pad_mask=pad_mask)
    torch.testing.assert_close(outs[-1], model(x)[-1])
    sum(o.sum() for o in outs).backward()


def test_out_indices_and_registry_build():
    model = MODELS.build(dict(type='InLineCSwin', arch='t', depths=(1, 1, 1, 1), out_indices=(1, 3), out_norm=True))
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [128, 512]
    assert hasattr(model, 'out_norm2') and not hasattr(model, 'out_norm1')


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = InLineCSwin(arch='t', depths=(1, 1, 1, 1), frozen_stages=1, drop_path_rate=0.1)
    model.train()
    frozen = ('stage1_conv_embed.', 'stage1.', 'merge1.', 'stage2.')
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    assert not model.stage1.training and not model.merge1.training and not model.stage2.training
    assert model.merge2.training and model.stage3.training


def test_classifier_head():
    model = InLineCSwin(arch='t', num_classes=10, **TINY)
    assert model.forward_classifier(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(RuntimeError, match='num_classes=0'):
        InLineCSwin(arch='t', **TINY).forward_classifier(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize('cls, kwargs, message', [
    (CSwin, dict(), 'needs attention=<name>'),
    (CSwin, dict(attention='linformer'), "unknown attention type 'linformer'"),
    (CSwin, dict(attention=('inline', 'cswin')), r'attention needs one entry per stage \(4\)'),
    (InLineCSwin, dict(num_heads=(2, 4, 7, 16)), 'num_heads=7 does not divide the embedding width 256'),
    (InLineCSwin, dict(embed_dims=96, num_heads=(3, 6, 3, 24)), r'num_heads=3 \(width 384\) must be even'),
    (InLineCSwin, dict(arch='xl'), "unknown InLineCSwin arch 'xl'"),
    (InLineCSwin, dict(arch=None, depths=(1, 1, 1, 1)), 'arch=None needs explicit embed_dims'),
    (InLineCSwin, dict(depths=(1, 1, 0, 1)), r'depths\[2\]=0'),
    (InLineCSwin, dict(split_sizes=(1, 2, 0, None)), r'split_sizes\[2\]=0'),
    (InLineCSwin, dict(split_sizes=(1, 2, 7)), r'split_sizes needs one entry per stage \(4\)'),
    (InLineCSwin, dict(attn_cfgs=dict(sr_ratio=2)), r"unknown options \['sr_ratio'\] for 'inline'"),
    (InLineCSwin, dict(out_indices=(4, )), 'out_indices entry 4'),
    (InLineCSwin, dict(frozen_stages=4), 'frozen_stages=4'),
])
def test_bad_configuration_fails_at_build_time_naming_the_value(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_bad_inputs_fail_with_a_clear_message():
    model = InLineCSwin(arch='t', **TINY)
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\)'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='pad_mask must have shape'):
        model(torch.randn(1, 3, 32, 32), pad_mask=torch.zeros(1, 16, 16, dtype=torch.bool))
