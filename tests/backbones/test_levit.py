import math

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmvitattn.backbones.levit import (LEVIT_VARIANTS, ArmourLeViT, ArmourPlusLeViT, BNConv, BNHead,
                                       BNLinear, LeViT, LeViTAttention, convert_levit_checkpoint,
                                       resize_offset_table)
from mmvitattn.registry import MODELS

timm = pytest.importorskip('timm')

# Armour paper: LeViT / Armour / Armour+ with the 1000-class head, millions.
PAPER_PARAMS = {
    '128s': (7.76, 7.47, 7.18),
    '192': (10.9, 10.4, 9.8),
    '256': (18.9, 17.9, 17.0),
    '384': (39.1, 37.1, 35.0),
}
CLASSES = (LeViT, ArmourLeViT, ArmourPlusLeViT)
SMALL = dict(arch='128s', depths=(1, 1, 1))


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def fused_param_count(model):
    """Parameters after folding every BatchNorm into its linear/conv (what the official LeViT
    script prints with fuse=True): a BN-linear keeps one bias per output instead of BN's two
    values, a BN-first head loses its BN (its shift goes into the existing linear bias)."""
    total = count_params(model)
    for m in model.modules():
        if isinstance(m, (BNLinear, BNConv)):
            total -= m.bn.num_features
        elif isinstance(m, BNHead):
            total -= 2 * m.bn.num_features
    return total


def randomize(model, seed=0):
    """Make every part of a LeViT matter: BN affine parameters and statistics away from identity,
    non-zero residual-output BNs (LeViT starts them at zero) and attention biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bn.weight'):
                p.copy_(torch.rand(p.shape, generator=g) * 0.7 + 0.3)
            elif name.endswith('bn.bias'):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif 'attention_biases' in name:
                p.copy_(torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def timm_model(name, **kwargs):
    return randomize(timm.create_model(name, pretrained=False, **kwargs)).eval()


def ours_from(timm_net, arch, **kwargs):
    model = LeViT(arch=arch, num_classes=1000, **kwargs).eval()
    model.load_state_dict(convert_levit_checkpoint(timm_net.state_dict(), model), strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# Parameter counts and layouts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_armour_paper(arch):
    """The training-time model with LeViT's 1000-class head and its distillation head (timm's
    levit_* count) reproduces every entry to 0.05M; without head_dist LeViT-128S would be 7.39M."""
    with torch.device('meta'):
        counts = [count_params(cls(arch=arch, num_classes=1000)) / 1e6 for cls in CLASSES]
    for got, paper in zip(counts, PAPER_PARAMS[arch]):
        assert abs(got - paper) <= 0.05, (arch, counts, PAPER_PARAMS[arch])
    assert counts[0] > counts[1] > counts[2]


def test_levit_128s_counts_match_timm_and_the_fused_counts_match_the_paper_digits():
    """The 128S line is printed with two decimals; folding the BNs (the official script's
    fuse=True count) reproduces all three digits exactly, which pins down the Armour readings."""
    with torch.device('meta'):
        models = [cls(arch='128s', num_classes=1000) for cls in CLASSES]
        reference = timm.create_model('levit_128s', pretrained=False)
    assert count_params(models[0]) == count_params(reference)
    assert [round(fused_param_count(m) / 1e6, 2) for m in models] == list(PAPER_PARAMS['128s'])


@pytest.mark.parametrize('arch', ['128s', '256'])
def test_state_dict_has_timm_levit_layout(arch):
    with torch.device('meta'):
        ours = {k: tuple(v.shape) for k, v in LeViT(arch=arch, num_classes=1000).state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in timm.create_model(f'levit_{arch}').state_dict().items()}
    assert ours == theirs


def test_armour_variants_change_only_the_residual_attention_projections():
    with torch.device('meta'):
        base, armour, plus = (cls(arch='128s').state_dict() for cls in CLASSES)
    for other, name in ((armour, 'qkv'), (plus, 'qk')):
        differing = {k for k in base if k not in other or other[k].shape != base[k].shape}
        assert differing and all('.blocks.' in k and '.attn.qkv.' in k for k in differing)
        assert all(k.replace('.attn.qkv.', f'.attn.{name}.') in other for k in differing)
        # the shrinking attentions are LeViT's in every variant
        assert all(other[k].shape == v.shape for k, v in base.items() if 'attn_downsample' in k)
    # per head: q 16 + k 16 + v 32 (LeViT), q + k + v_own 16 (Armour), q + k (Armour+)
    key = 'stages.0.blocks.0.attn.{}.linear.weight'
    assert base[key.format('qkv')].shape[0] == 4 * 64
    assert armour[key.format('qkv')].shape[0] == 4 * 48
    assert plus[key.format('qk')].shape[0] == 4 * 32


# ---------------------------------------------------------------------------------------------
# Attention math
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('attention', ['softmax', 'armour', 'armour_plus'])
def test_attention_matches_an_explicit_reference(attention):
    torch.manual_seed(0)
    hw = (3, 5)
    attn = randomize(LeViTAttention(24, key_dim=4, num_heads=3, attention=attention, resolution=hw)).eval()
    x = torch.randn(2, 15, 24)
    proj = attn.qk if attention == 'armour_plus' else attn.qkv
    parts = proj(x).view(2, 15, 3, -1).transpose(1, 2)
    q, k = parts[..., :4], parts[..., 4:8]
    v = {'softmax': parts[..., 8:], 'armour': torch.cat([q, parts[..., 8:]], -1),
         'armour_plus': torch.cat([q, k], -1)}[attention]
    assert v.shape[-1] == 8  # attn_ratio 2 preserved in every variant
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(5), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    offset_index = (ys[:, None] - ys[None]).abs() * 5 + (xs[:, None] - xs[None]).abs()
    logits = q @ k.transpose(-2, -1) / 2.0 + attn.attention_biases[:, offset_index]
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 15, 24))
    torch.testing.assert_close(attn(x, hw), expected, atol=1e-5, rtol=1e-5)


def _cubic(t, a=-0.75):
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def reference_resized_table(table, size):
    """Loop-by-loop statement of the documented rule: offset d on the new grid reads the table's
    mirrored (signed-offset) extension at d * (R - 1) / (K - 1), by bicubic convolution (a = -0.75)
    with indices clamped to the border."""
    heads, rh, rw = table.shape
    out = torch.zeros(heads, *size, dtype=torch.float64)
    t = table.double()

    def taps(d, r, k):
        u = (d * (r - 1) / (k - 1) if k > 1 else 0.0) + (r - 1)
        base = math.floor(u)
        return [(abs(min(max(i, 0), 2 * r - 2) - (r - 1)), _cubic(u - i)) for i in range(base - 1, base + 3)]

    for dy in range(size[0]):
        for dx in range(size[1]):
            for iy, wy in taps(dy, rh, size[0]):
                for ix, wx in taps(dx, rw, size[1]):
                    out[:, dy, dx] += wy * wx * t[:, iy, ix]
    return out


@pytest.mark.parametrize('src, dst', [((4, 4), (7, 10)), ((7, 7), (4, 5)), ((14, 14), (20, 9)),
                                      ((4, 4), (1, 6))])
def test_bias_table_interpolation_follows_the_documented_rule(src, dst):
    table = torch.randn(3, *src)
    got = resize_offset_table(table, dst, 'interpolate')
    torch.testing.assert_close(got.double(), reference_resized_table(table, dst), atol=2e-5, rtol=1e-5)
    assert torch.equal(resize_offset_table(table, src, 'interpolate'), table)
    # corners aligned: offset 0 and the largest offset keep their values
    torch.testing.assert_close(got[:, 0, 0], table[:, 0, 0], atol=1e-5, rtol=0)
    if min(dst) > 1:
        torch.testing.assert_close(got[:, -1, -1], table[:, -1, -1], atol=1e-5, rtol=0)


def test_clamp_mode_keeps_trained_distances():
    table = torch.randn(2, 7, 7)
    small = resize_offset_table(table, (4, 5), 'clamp')
    assert torch.equal(small, table[:, :4, :5])
    large = resize_offset_table(table, (10, 12), 'clamp')
    assert torch.equal(large[:, :7, :7], table)
    assert torch.equal(large[:, 9, 11], table[:, 6, 6]) and torch.equal(large[:, 3, 10], table[:, 3, 6])


def test_attention_bias_grid_follows_the_run_time_size_and_gets_gradients():
    model = LeViT(**SMALL)
    attn = model.stages[1].downsample.attn_downsample
    bias = attn.attention_bias((14, 20))  # queries on the 7x10 even positions
    assert bias.shape == (attn.num_heads, 70, 280)
    bias.sum().backward()
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Equivalence with timm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name, arch', [('levit_128s', '128s'), ('levit_256', '256'),
                                        ('levit_conv_128s', '128s')])
def test_features_and_logits_equal_timm_at_224(name, arch):
    reference = timm_model(name)
    model = ours_from(reference, arch, out_indices=(2, 3, 4))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        feats = model(x)
        logits = model.forward_classifier(x)
        expected_logits = reference(x)
    for ours, theirs, stride in zip(feats, expected, (16, 32, 64)):
        assert ours.shape == theirs.shape == (2, ours.shape[1], math.ceil(224 / stride), math.ceil(224 / stride))
        assert theirs.std() > 0.1  # not a degenerate (identity/zero) comparison
        assert (ours - theirs).abs().max() <= 1e-4
    assert (logits - expected_logits).abs().max() <= 1e-4


@pytest.mark.parametrize('mode', ['interpolate', 'clamp'])
def test_non_square_input_equals_timm_built_for_that_grid_with_our_resized_tables(mode):
    """timm's biases only work at the size they were built for. At 224x320 we compare with a timm
    LeViT built for 224x320 whose tables are our resized 224 tables (the resizing itself is
    checked against an explicit reference above)."""
    trained = timm_model('levit_128s')
    model = ours_from(trained, '128s', attn_bias_mode=mode)
    grids = {'stages.0.': (14, 20), 'stages.1.downsample': (14, 20), 'stages.1.blocks': (7, 10),
             'stages.2.downsample': (7, 10), 'stages.2.blocks': (4, 5)}
    state = trained.state_dict()
    for key, value in state.items():
        if key.endswith('attention_biases'):
            grid = next(g for prefix, g in grids.items() if key.startswith(prefix))
            module = model.get_submodule(key.rsplit('.', 1)[0])
            table = module.attention_biases.detach().view(-1, *module.resolution)
            state[key] = resize_offset_table(table, grid, mode).reshape(value.shape[0], -1)
    reference = timm.create_model('levit_128s', pretrained=False, img_size=(224, 320)).eval()
    reference.load_state_dict(state)
    x = torch.randn(1, 3, 224, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        feats = model(x)
    assert [f.shape[-2:] for f in feats] == [(14, 20), (7, 10), (4, 5)]
    for ours, theirs in zip(feats, expected):
        assert (ours - theirs).abs().max() <= 1e-4


def _official_layout(ours, depths):
    """Our state dict renamed to the facebookresearch/LeViT layout: patch_embed.{0,2,4,6}.{c,bn};
    one flat ``blocks`` list holding, per stage, [AttentionSubsample (``kv``, ``q.1``, ``proj.1``),
    its Residual(MLP)] and then Residual(Attention) (``m.qkv``, ``m.proj.1``) / Residual(MLP)
    (``m.0``, ``m.2``) pairs; heads ``bn``/``l``."""
    units = []  # (our prefix, official kind) in the official order
    for s, depth in enumerate(depths):
        if s:
            units += [(f'stages.{s}.downsample.attn_downsample.', 'shrink'),
                      (f'stages.{s}.downsample.mlp.', 'mlp')]
        for j in range(depth):
            units += [(f'stages.{s}.blocks.{j}.attn.', 'attn'), (f'stages.{s}.blocks.{j}.mlp.', 'mlp')]
    renames = {
        'attn': [('qkv.linear.', 'm.qkv.c.'), ('qkv.bn.', 'm.qkv.bn.'), ('proj.ln.linear.', 'm.proj.1.c.'),
                 ('proj.ln.bn.', 'm.proj.1.bn.'), ('attention_biases', 'm.attention_biases')],
        'mlp': [('ln1.linear.', 'm.0.c.'), ('ln1.bn.', 'm.0.bn.'), ('ln2.linear.', 'm.2.c.'),
                ('ln2.bn.', 'm.2.bn.')],
        'shrink': [('kv.linear.', 'kv.c.'), ('kv.bn.', 'kv.bn.'), ('q.ln.linear.', 'q.1.c.'),
                   ('q.ln.bn.', 'q.1.bn.'), ('proj.ln.linear.', 'proj.1.c.'), ('proj.ln.bn.', 'proj.1.bn.'),
                   ('attention_biases', 'attention_biases')],
    }
    out = {}
    for key, value in ours.items():
        if key.startswith('stem.conv'):
            i = int(key[len('stem.conv')]) - 1
            rest = key.split('.', 2)[2].replace('linear.', 'c.')
            out[f'patch_embed.{2 * i}.{rest}'] = value
        elif key.startswith('head'):
            out[key.replace('.linear.', '.l.')] = value
        else:
            n, (prefix, kind) = next((n, u) for n, u in enumerate(units) if key.startswith(u[0]))
            suffix = key[len(prefix):]
            old, new = next((o, w) for o, w in renames[kind] if suffix.startswith(o))
            out[f'blocks.{n}.{new}{suffix[len(old):]}'] = value
    return out


def test_converter_reads_the_official_layout():
    model = randomize(LeViT(arch='128s', num_classes=1000))
    ours = model.state_dict()
    official = _official_layout(ours, (2, 3, 4))
    assert len(official) == len(ours)
    assert 'blocks.0.m.qkv.c.weight' in official and 'blocks.4.kv.c.weight' in official
    assert 'blocks.5.m.0.bn.running_var' in official and 'head_dist.l.weight' in official
    converted = convert_levit_checkpoint({'model': official})
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[k], ours[k]) for k in ours)


def test_pretrained_init_cfg_loads_a_timm_checkpoint(tmp_path):
    reference = timm_model('levit_128s')
    path = tmp_path / 'levit_128s.pth'
    torch.save(reference.state_dict(), path)
    model = LeViT(arch='128s', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        assert all((a - b).abs().max() <= 1e-4 for a, b in zip(model(x), expected))


# ---------------------------------------------------------------------------------------------
# Backbone behaviour
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('cls', CLASSES)
def test_forward_backward_on_a_non_square_input(cls):
    model = cls(**SMALL, out_indices=(0, 1, 2, 3, 4), drop_path_rate=0.1)
    x = torch.randn(2, 3, 224, 320, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, c, math.ceil(224 / s), 320 // s) for c, s in
                                              zip((32, 64, 128, 256, 384), (4, 8, 16, 32, 64))]
    assert model.out_channels == (32, 64, 128, 256, 384) and model.out_strides == (4, 8, 16, 32, 64)
    sum(o.square().mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_input_not_a_multiple_of_16_is_padded_up():
    model = LeViT(**SMALL, out_indices=(0, 1, 2, 3, 4))
    outs = model(torch.randn(1, 3, 100, 70))  # padded to 112x80
    assert [tuple(o.shape[-2:]) for o in outs] == [(28, 20), (14, 10), (7, 5), (4, 3), (2, 2)]


def test_pad_mask_is_honoured():
    """Masked columns (zeros, as batch padding) change nothing on the real region: the result
    equals the image cropped to its real size and run alone."""
    model = LeViT(**SMALL, out_indices=(0, 1, 2, 3, 4)).eval()
    x = torch.randn(1, 3, 64, 96)
    x[..., 80:] = 0
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[:, :, 80:] = True
    with torch.no_grad():
        alone = model(x[..., :80])
        masked = model(x, mask)
        unmasked = model(x)
    for a, b in zip(alone, masked):
        assert (a - b[..., :a.shape[-2], :a.shape[-1]]).abs().max() <= 1e-4
    assert max((a - b[..., :a.shape[-2], :a.shape[-1]]).abs().max() for a, b in zip(alone, unmasked)) > 1e-4
    with pytest.raises(ValueError, match='pad_mask must have shape'):
        model(x, mask[:, :32])


def test_variant_names_and_registry_build():
    assert len(LEVIT_VARIANTS) == 15 and 'armour-plus-levit-128s' in LEVIT_VARIANTS
    model = LeViT(variant='armour-plus-levit-128s', depths=(1, 1, 1))
    assert model.attention == ('armour_plus', ) * 3
    assert count_params(model) == count_params(ArmourPlusLeViT(arch='128s', depths=(1, 1, 1)))
    built = MODELS.build(dict(type='ArmourLeViT', arch='128s', depths=(1, 1, 1), out_indices=(1, 3)))
    assert built.attention == ('armour', ) * 3
    assert [o.shape[1] for o in built(torch.randn(1, 3, 64, 96))] == [64, 256]
    mixed = LeViT(arch='128s', depths=(1, 1, 1), attention=('softmax', 'armour', 'armour_plus'))
    assert hasattr(mixed.stages[0].blocks[0].attn, 'qkv') and hasattr(mixed.stages[2].blocks[0].attn, 'qk')


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = LeViT(**SMALL, frozen_stages=1, out_norm=True, out_indices=(0, 2, 3))
    model.train()
    for name, p in model.named_parameters():
        frozen = name.startswith(('stem.', 'stages.0.', 'out_norms.0.', 'out_norms.2.'))
        assert p.requires_grad != frozen, name
    assert not model.stem.training and not model.stages[0].training
    assert not model.stem.conv1.bn.training
    assert model.stages[1].training and model.stages[1].blocks[0].attn.qkv.bn.training


def test_norm_eval_keeps_batchnorm_in_eval_mode_while_training():
    model = LeViT(**SMALL, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert model.training and model.stages[0].training
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    # without norm_eval the statistics move
    plain = LeViT(**SMALL).train()
    plain(torch.randn(2, 3, 64, 64))
    assert not torch.equal(plain.stem.conv1.bn.running_mean, torch.zeros(16))


def test_with_cp_gives_the_same_gradients_and_batchnorm_statistics():
    torch.manual_seed(0)
    plain = randomize(LeViT(**SMALL))
    checkpointed = LeViT(**SMALL, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96)
    grads, stats = [], []
    for model in (plain, checkpointed):
        model.train()
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        stats.append({k: v for k, v in model.state_dict().items() if 'running' in k or 'num_batches' in k})
    torch.testing.assert_close(grads[0], grads[1])
    assert all(torch.allclose(stats[0][k].float(), stats[1][k].float(), atol=1e-6) for k in stats[0])


def test_zero_init_residual_starts_blocks_as_identities():
    model = LeViT(**SMALL)
    ends = [model.stages[0].blocks[0].attn.proj.ln.bn, model.stages[0].blocks[0].mlp.ln2.bn,
            model.stages[1].downsample.mlp.ln2.bn]
    assert all(torch.equal(bn.weight, torch.zeros_like(bn.weight)) for bn in ends)
    # the shrinking attention is not residual: its projection BN starts at one
    assert torch.equal(model.stages[1].downsample.attn_downsample.proj.ln.bn.weight, torch.ones(256))
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    stem = model.stem(x)[0].flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.stages[0].blocks[0](stem, (4, 4)), stem)
    other = LeViT(**SMALL, zero_init_residual=False)
    assert torch.equal(other.stages[0].blocks[0].mlp.ln2.bn.weight, torch.ones(128))


def test_drop_path_is_stochastic_in_training_only():
    model = randomize(LeViT(**SMALL, drop_path_rate=0.5))
    x = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


def test_classifier_head():
    model = LeViT(**SMALL, num_classes=10).eval()
    assert model.forward_classifier(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert model.head_dist is not None and LeViT(**SMALL, num_classes=10, distillation=False).head_dist is None
    with pytest.raises(RuntimeError, match='num_classes=0'):
        LeViT(**SMALL).forward_classifier(torch.randn(1, 3, 64, 64))


def test_outputs_are_contiguous_nchw_with_out_norm():
    model = LeViT(**SMALL, out_norm=True, out_indices=(0, 1, 2, 3, 4))
    feats = model(torch.randn(2, 3, 64, 96))
    assert all(f.is_contiguous() for f in feats)
    assert sorted(model.out_norms.keys()) == ['0', '1', '2', '3', '4']


@pytest.mark.parametrize('kwargs, message', [
    (dict(attention='linear'), "unknown LeViT attention 'linear'"),
    (dict(attention=('softmax', 'armour')), r'attention needs one entry per stage \(3\)'),
    (dict(depths=(1, 1)), r'depths needs one entry per stage \(3\)'),
    (dict(arch='512'), "unknown LeViT arch '512'"),
    (dict(variant='levit-1024'), "unknown LeViT variant 'levit-1024'"),
    (dict(variant='levit-128s', arch='256'), "variant='levit-128s' is arch '128s'"),
    (dict(variant='levit-128s', attention='armour'), "uses 'softmax' attention"),
    (dict(out_indices=(5, )), 'out_indices entry 5'),
    (dict(frozen_stages=4), 'frozen_stages=4'),
    (dict(attention='armour_plus', attn_ratio=3), "'armour_plus' attention sets v = \\[q | k\\]"),
    (dict(attention='armour', attn_ratio=1), 'needs attn_ratio > 1'),
    (dict(attn_bias_mode='nearest'), "unknown attn_bias_mode 'nearest'"),
    (dict(arch=None, embed_dims=(128, 256, 384), key_dim=24, num_heads=(4, 6, 8), depths=(1, 1, 1)),
     'key_dim=24 must divide the stage width 128'),
    (dict(arch=None, embed_dims=(100, 256, 384), key_dim=4, num_heads=(4, 6, 8), depths=(1, 1, 1)),
     r'embed_dims\[0\]=100 must be a multiple of 8'),
    (dict(arch=None, embed_dims=(128, 256, 384)), 'needs explicit key_dim, num_heads, depths'),
    (dict(num_heads=(4, 0, 8)), 'num_heads must be a positive int'),
    (dict(key_dim=0), 'key_dim must be a positive int'),
    (dict(pretrain_img_size=8), 'pretrain_img_size=8 is smaller than the stem stride 16'),
    (dict(out_indices=()), 'out_indices is empty'),
])
def test_bad_configuration_fails_at_build_time_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LeViT(**kwargs)


def test_subclass_refuses_a_variant_of_another_attention():
    with pytest.raises(ValueError, match="ArmourLeViT uses 'armour' attention"):
        ArmourLeViT(variant='levit-128s')


def test_images_must_be_4d():
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\), got \(3, 64, 64\)'):
        LeViT(**SMALL)(torch.randn(3, 64, 64))
