import ast
import math
from pathlib import Path

import pytest
import torch

from mmvitattn.backbones.swin import (ArmourSwin, CastlingSwin, InLineSwin, ShiftedWindowAttention,
                                      SoftmaxSwin, Swin, convert_timm_swin, resize_relative_position_table)
from mmvitattn.registry import MODELS

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'inline_official_keys'

# The InLine paper: parameters with the 1000-class head, in millions.
INLINE_SWIN_PARAMS = {'t': 29.22, 's': 49.79, 'b': 88.35}
DROPPED = ('relative_position_index', 'attn_mask')  # official buffers, derived at run time here
SMALL = dict(depths=(1, 1, 3, 1))  # reduced depths; 3 in stage 2 so ('I', 2) mixes kinds


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def fixture_layout(name):
    path = FIXTURES / f'{name}.tsv'
    rows = [line.split('\t') for line in path.read_text().splitlines() if line.strip()]
    return {key: tuple(ast.literal_eval(shape)) for key, shape in rows}


def random_checkpoint(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in layout.items()}


@pytest.fixture(scope='module')
def released():
    """The full-size InLine-Swin models with their ImageNet heads, built once."""
    return {arch: InLineSwin(arch=arch, num_classes=1000) for arch in INLINE_SWIN_PARAMS}


# ---------------------------------------------------------------- the released models
@pytest.mark.parametrize('arch', sorted(INLINE_SWIN_PARAMS))
def test_inline_swin_parameter_count_matches_paper(released, arch):
    assert abs(count_params(released[arch]) / 1e6 - INLINE_SWIN_PARAMS[arch]) < 0.005


def test_softmax_swin_t_has_the_swin_t_parameter_count():
    # Swin-T with its 1000-class head: 28.29M (Swin paper / timm).
    assert abs(count_params(SoftmaxSwin(arch='t', num_classes=1000)) / 1e6 - 28.29) < 0.005


def _official_without_buffers(name):
    official = fixture_layout(name)
    kept = {k: v for k, v in official.items() if not k.endswith(DROPPED)}
    assert len(kept) < len(official)  # the fixture does hold the buffers we drop
    return kept


@pytest.mark.parametrize('arch', sorted(INLINE_SWIN_PARAMS))
def test_state_dict_is_the_official_layout_less_the_run_time_buffers(released, arch):
    ours = {k: tuple(v.shape) for k, v in released[arch].state_dict().items()}
    assert ours == _official_without_buffers(f'swin_{arch}')


def test_swin_b_384_layout_differs_only_in_the_window(released):
    ours = {k: tuple(v.shape) for k, v in released['b'].state_dict().items()}
    # The 384 fine-tune differs only in the window (12) of its softmax blocks.
    ours_384 = dict(ours)
    for k in ours_384:
        if k.endswith('relative_position_bias_table'):
            ours_384[k] = (23 * 23, ours_384[k][1])
    assert ours_384 == _official_without_buffers('swin_b_384')


def test_inline_swin_block_layout(released):
    b = released['b']
    kinds = [[blk.attn.attention_name for blk in layer.blocks] for layer in b.layers]
    assert kinds[0] == kinds[1] == ['inline'] * 2
    assert kinds[2] == ['inline'] * 2 + ['swin_window'] * 16
    assert kinds[3] == ['swin_window'] * 2
    # Softmax blocks shift on odd block indices (within the stage), InLine blocks never do.
    assert [blk.attn.shift for blk in b.layers[2].blocks[2:]] == [j % 2 == 1 for j in range(2, 18)]
    t = released['t']
    assert [blk.attn.attention_name for blk in t.layers[2].blocks] == ['inline'] * 6
    assert [blk.attn.shift for blk in t.layers[3].blocks] == [False, True]
    c = CastlingSwin(arch='b', **SMALL)
    assert [blk.attn.attention_name for blk in c.layers[2].blocks] == ['castling'] * 2 + ['swin_window']
    a = ArmourSwin(arch='t', **SMALL)
    assert [[blk.attn.attention_name for blk in layer.blocks] for layer in a.layers] == \
        [['armour'], ['armour'], ['armour'] * 3, ['swin_window']]


def test_attention_spec_forms():
    model = Swin(arch='t', depths=(1, 2, 3, 2),
                 attention=('inline', ('A', 'window'), ('castling', 1), ['swin_window', 'softmax']))
    kinds = [[blk.attn.attention_name for blk in layer.blocks] for layer in model.layers]
    assert kinds == [['inline'], ['armour', 'swin_window'], ['castling', 'swin_window', 'swin_window'],
                     ['swin_window', 'softmax']]
    # Windows shift on odd block indices of the stage, whatever the blocks before them are.
    assert [blk.attn.shift for blk in model.layers[2].blocks[1:]] == [True, False]
    assert model(torch.randn(1, 3, 64, 64))[-1].shape == (1, 768, 2, 2)


def test_official_checkpoint_loads_strictly_buffers_and_all(released):
    checkpoint = random_checkpoint(fixture_layout('swin_t'))
    model = released['t']
    model.load_state_dict(checkpoint, strict=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, checkpoint[k], msg=k)


def test_384_checkpoint_loads_into_window_7_with_bicubic_tables(released):
    checkpoint = random_checkpoint(fixture_layout('swin_b_384'))
    released['b'].load_state_dict(checkpoint, strict=True)
    key = 'layers.2.blocks.3.attn.relative_position_bias_table'
    expected = torch.nn.functional.interpolate(
        checkpoint[key].t().reshape(1, 16, 23, 23), size=(13, 13), mode='bicubic', align_corners=False)
    torch.testing.assert_close(released['b'].state_dict()[key], expected.reshape(16, 169).t())


@pytest.mark.parametrize('arch', ['s', 'b'])
def test_released_inline_swin_s_b_load_unresized_and_stage_3_runs_the_released_windows(released, arch):
    """A released-layout InLine-Swin-S/B checkpoint at 224: every table loads as it is (13 x 13:
    the released softmax blocks use max(7, WINDOW_SIZE // 8) = 7, see the InLine configs), and the
    stage-3 softmax blocks on the 14 x 14 map equal the explicit shifted-window reference (even
    blocks 2 x 2 plain windows, odd blocks shifted by 3 with the -100 seam mask)."""
    model = released[arch]
    # Trained-scale weights (std 0.05): with unit-variance projections the logits reach the
    # thousands and the official -100 seam mask no longer decides anything.
    checkpoint = {k: v * 0.05 for k, v in random_checkpoint(fixture_layout(f'swin_{arch}'), seed=1).items()}
    report = model.load_pretrained({'model': checkpoint})
    assert not report.resized and not report.new
    state = model.state_dict()
    for key in (k for k in checkpoint if k.endswith('relative_position_bias_table')):
        torch.testing.assert_close(state[key], checkpoint[key], rtol=0, atol=0)
    softmax_blocks = [b for b in model.layers[2].blocks if b.attn.attention_name == 'swin_window'][:2]
    assert [b.attn.shift for b in softmax_blocks] == [False, True]
    torch.manual_seed(0)
    x = torch.randn(1, 14 * 14, model.embed_dims[2])
    with torch.no_grad():
        for block in softmax_blocks:
            torch.testing.assert_close(block.attn(x, (14, 14)), dense_window_reference(block.attn, x, (14, 14)),
                                       atol=1e-5, rtol=1e-5)


def test_384_checkpoint_loads_unresized_into_the_384_model():
    model = InLineSwin(arch='b', pretrain_img_size=384, num_classes=1000)
    report = model.load_pretrained({'model': random_checkpoint(fixture_layout('swin_b_384'))})
    assert not report.resized and not report.new


def test_table_resize_keeps_heads_apart():
    table = torch.arange(4.0).repeat(23 * 23, 1)  # head h is the constant h
    resized = resize_relative_position_table(table, 7)
    assert resized.shape == (169, 4)
    torch.testing.assert_close(resized, torch.arange(4.0).repeat(169, 1))
    assert resize_relative_position_table(table, 12) is table


# ---------------------------------------------------------------- equivalence with timm
def _timm_and_ours(size, **attn):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    # timm fixes each block's window and shift from img_size when it builds the model.
    reference = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, img_size=size).eval()
    ours = SoftmaxSwin(arch='t', num_classes=1000, attn_cfgs=attn or None).eval()
    ours.load_state_dict(convert_timm_swin(reference.state_dict()), strict=True)
    return reference, ours


@pytest.mark.parametrize('size, attn', [
    ((224, 224), {}),
    ((224, 448), {}),  # non-square; stage 4 is 7 x 14: one window high, shifted along the width only
    # Maps that are not multiples of 7 (and odd maps before patch merging): timm rolls before
    # padding; with that order our stages equal timm's (the default pad-then-roll is checked
    # against the explicit reference below).
    ((224, 320), dict(swin_window=dict(shift_first=True))),
    ((200, 296), dict(swin_window=dict(shift_first=True))),
])
def test_stage_features_equal_timm_swin_tiny(size, attn):
    reference, ours = _timm_and_ours(size, **attn)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        feats = ours(x)
        logits = ours.forward_classifier(x), reference(x)
    assert [f.shape for f in feats] == [e.shape for e in expected]
    for f, e in zip(feats, expected):
        assert (f - e).abs().max() <= 1e-4
    assert (logits[0] - logits[1]).abs().max() <= 1e-4


# ---------------------------------------------------------------- window attention vs a dense reference
def dense_window_reference(attn: ShiftedWindowAttention, x, hw):
    """Every token of the zero-padded map, rolled by the shift, attends the tokens of its window,
    with the table bias for their (dy, dx) and -100 between tokens on opposite sides of the
    roll's seam. Built token by token, with no roll, window partition or shift-region labels."""
    b, n, c = x.shape
    h, w = hw
    ws, heads, d = attn.window_size, attn.num_heads, attn.head_dim
    shift = ws // 2 if attn.shift else 0
    wh, ww = min(ws, h), min(ws, w)
    sh, sw = (shift if h > ws else 0), (shift if w > ws else 0)
    hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
    grid = torch.zeros(b, hp, wp, c)
    grid[:, :h, :w] = x.reshape(b, h, w, c)
    tokens = grid.reshape(b, hp * wp, c)
    rows = torch.arange(hp).repeat_interleave(wp)
    cols = torch.arange(wp).repeat(hp)
    r, cc = (rows - sh) % hp, (cols - sw) % wp  # where each token sits after the roll
    wrapped_r, wrapped_c = rows < sh, cols < sw  # rolled across the seam
    same_window = ((r[:, None] // wh) == (r[None, :] // wh)) & ((cc[:, None] // ww) == (cc[None, :] // ww))
    seam = (wrapped_r[:, None] != wrapped_r[None, :]) | (wrapped_c[:, None] != wrapped_c[None, :])
    dy = (r[:, None] - r[None, :]).clamp(-(ws - 1), ws - 1) + ws - 1
    dx = (cc[:, None] - cc[None, :]).clamp(-(ws - 1), ws - 1) + ws - 1
    table = attn.relative_position_bias_table.reshape(2 * ws - 1, 2 * ws - 1, heads)
    bias = table[dy, dx].permute(2, 0, 1)  # (heads, N, N)
    q, k, v = attn.qkv(tokens).reshape(b, -1, 3, heads, d).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1)) * d**-0.5 + bias + seam.float() * -100.0
    logits = logits.masked_fill(~same_window, float('-inf'))
    y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, c)
    y = attn.proj(y).reshape(b, hp, wp, c)[:, :h, :w]
    return y.reshape(b, h * w, c)


@pytest.mark.parametrize('hw, shift', [((14, 14), True), ((10, 13), True), ((10, 13), False), ((7, 14), True),
                                       ((5, 9), True), ((3, 20), True), ((15, 8), True), ((4, 4), True)])
def test_window_attention_matches_the_dense_reference(hw, shift):
    torch.manual_seed(0)
    attn = ShiftedWindowAttention(16, 2, window_size=7, shift=shift).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()  # make the bias matter
        x = torch.randn(2, hw[0] * hw[1], 16)
        torch.testing.assert_close(attn(x, hw), dense_window_reference(attn, x, hw), atol=1e-5, rtol=1e-5)


def test_window_and_shift_follow_the_official_rule_per_dimension():
    attn = ShiftedWindowAttention(8, 1, window_size=7, shift=True)
    assert attn.window_and_shift((56, 80)) == ((7, 7), (3, 3))
    assert attn.window_and_shift((7, 7)) == ((7, 7), (0, 0))  # official: min(H, W) <= 7 -> no shift
    assert attn.window_and_shift((5, 5)) == ((5, 5), (0, 0))  # ... and the window shrinks to the map
    assert attn.window_and_shift((7, 10)) == ((7, 7), (0, 3))
    assert attn.window_and_shift((3, 20)) == ((3, 7), (0, 3))


# ---------------------------------------------------------------- running the variants
VARIANTS = [
    (InLineSwin, 't'), (InLineSwin, 's'), (InLineSwin, 'b'), (CastlingSwin, 't'), (ArmourSwin, 't'),
    (SoftmaxSwin, 't'),
]


@pytest.mark.parametrize('cls, arch', VARIANTS)
@pytest.mark.parametrize('size', [(224, 320), (200, 296)])
def test_every_variant_runs_forward_backward(cls, arch, size):
    torch.manual_seed(0)
    model = cls(arch=arch, **SMALL)
    x = torch.randn(1, 3, *size, requires_grad=True)
    outs = model(x)
    widths = (96, 192, 384, 768) if arch != 'b' else (128, 256, 512, 1024)
    hw = [(math.ceil(size[0] / 4), math.ceil(size[1] / 4))]
    for _ in range(3):
        hw.append((math.ceil(hw[-1][0] / 2), math.ceil(hw[-1][1] / 2)))
    assert [tuple(o.shape) for o in outs] == [(1, c, *s) for c, s in zip(widths, hw)]
    assert all(o.is_contiguous() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_odd_strides_and_tiny_inputs():
    model = InLineSwin(arch='t', depths=(1, 1, 1, 1))
    outs = model(torch.randn(1, 3, 100, 70))  # not even a multiple of the patch size
    assert [tuple(o.shape[-2:]) for o in outs] == [(25, 18), (13, 9), (7, 5), (4, 3)]
    outs = SoftmaxSwin(arch='t', depths=(1, 2, 1, 2))(torch.randn(1, 3, 8, 8))
    assert [tuple(o.shape[-2:]) for o in outs] == [(2, 2), (1, 1), (1, 1), (1, 1)]


def test_global_stages_are_invariant_to_batch_padding():
    torch.manual_seed(0)
    model = Swin(arch='t', attention='I', depths=(1, 1, 1, 1), out_norm=True).eval()
    image = torch.randn(1, 3, 100, 140)
    batch = torch.zeros(1, 3, 128, 160)
    batch[..., :100, :140] = image
    pad_mask = torch.ones(1, 128, 160, dtype=torch.bool)
    pad_mask[:, :100, :140] = False
    with torch.no_grad():
        alone = model(image)
        padded = model(batch, pad_mask)
    for a, p in zip(alone, padded):
        torch.testing.assert_close(p[..., :a.shape[-2], :a.shape[-1]], a, atol=1e-4, rtol=1e-4)


def test_out_indices_out_norm_and_registry_build():
    model = MODELS.build(dict(type='InLineSwin', arch='t', depths=(1, 1, 1, 1), out_indices=(1, 3),
                              out_norm=True))
    assert hasattr(model, 'out_norm1') and hasattr(model, 'out_norm3') and not hasattr(model, 'out_norm0')
    assert model.norm is None and model.head is None
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [192, 768]


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = InLineSwin(arch='t', depths=(1, 1, 1, 1), frozen_stages=1, drop_path_rate=0.1, out_norm=True)
    model.train()
    frozen = ('patch_embed.', 'layers.0.', 'out_norm0.', 'out_norm1.', 'layers.1.blocks.')
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    # The merging that feeds stage 1 belongs to it; the one that feeds stage 2 does not.
    assert not model.layers[0].downsample.training and model.layers[1].downsample.training
    assert not model.layers[1].blocks.training and model.layers[2].blocks.training


def test_classifier_head_and_pretrained_loading(tmp_path):
    model = InLineSwin(arch='t', depths=(1, 1, 1, 1), num_classes=10)
    assert model.forward_classifier(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(RuntimeError, match='num_classes=0'):
        InLineSwin(arch='t', depths=(1, 1, 1, 1)).forward_classifier(torch.randn(1, 3, 32, 32))

    # An official checkpoint file (with buffers, norm and head) into a detection backbone.
    checkpoint = random_checkpoint(fixture_layout('swin_t'))
    path = tmp_path / 'inline_swin_t.pth'
    torch.save({'model': checkpoint}, path)
    backbone = InLineSwin(arch='t', out_norm=True, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    own = backbone.state_dict()
    torch.testing.assert_close(own['layers.2.blocks.5.attn.residual.2.weight'],
                               checkpoint['layers.2.blocks.5.attn.residual.2.weight'])
    report = backbone.load_pretrained(str(path))
    assert report.new and all(k.startswith('out_norm') for k in report.new)
    assert {k.split('.')[0] for k in report.dropped} == {'head', 'norm', 'layers'}
    assert all(k.endswith(('relative_position_index', 'attn_mask')) for k in report.dropped if k.startswith('layers'))


def test_timm_state_dict_loads_through_load_pretrained():
    timm = pytest.importorskip('timm')
    reference = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False)
    backbone = SoftmaxSwin(arch='t')
    report = backbone.load_pretrained({'state_dict': reference.state_dict()})
    # SoftmaxSwin(num_classes=0) is a backbone: timm's final norm and classifier are not used.
    assert report.new == [] and set(report.dropped) == {'norm.weight', 'norm.bias', 'head.fc.weight', 'head.fc.bias'}
    assert report.converted['layers.0.downsample.reduction.weight'] == 'layers.1.downsample.reduction.weight'
    torch.testing.assert_close(backbone.layers[0].downsample.reduction.weight,
                               reference.layers[1].downsample.reduction.weight)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize('kwargs, message', [
    (dict(attention='X'), "unknown attention 'X'"),
    (dict(attention=('I', 'I', 'Q', 'S')), "unknown attention 'Q'"),
    (dict(attention='linformer'), "unknown attention 'linformer'"),
    (dict(attention=('I', 'I', 'S')), r'attention needs one entry per stage \(4\)'),
    (dict(attention=('I', 'I', ('I', 7), 'S')), r"asks for 7 blocks; the stage has 6"),
    (dict(attention=('I', 'I', ('I', 'S'), 'S')), 'names 2 blocks; the stage has depth 6'),
    (dict(attention=('I', 'I', 3, 'S')), 'must be a name, \\(name, count\\) or one name per block'),
    (dict(attention='S', depths=(2, 2, 6)), r'depths needs one entry per stage \(4\)'),
    (dict(attention='S', window_size=(7, 7)), r'window_size needs one entry per stage \(4\)'),
    (dict(attention='S', window_size=0), 'window_size must be a positive int'),
    (dict(attention='S', num_heads=(3, 6, 12, 25)), 'num_heads=25 does not divide the embedding width 768'),
    (dict(attention='S', arch='xl'), "unknown Swin arch 'xl'"),
    (dict(attention='S', out_indices=(4, )), 'out_indices entry 4'),
    (dict(attention='S', frozen_stages=4), 'frozen_stages=4'),
    (dict(attention='S', attn_cfgs=dict(castling=dict(aux_softmax=True))), "'castling', which no block uses"),
    (dict(attention=None), 'Swin needs an attention spec'),
])
def test_bad_configuration_fails_at_build_time_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Swin(**kwargs)


def test_inline_swin_needs_a_spec_without_a_released_arch():
    with pytest.raises(ValueError, match='needs an explicit attention spec'):
        InLineSwin(arch=None, embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    model = InLineSwin(arch=None, embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), attention='I')
    assert model(torch.randn(1, 3, 32, 32))[-1].shape == (1, 256, 1, 1)
