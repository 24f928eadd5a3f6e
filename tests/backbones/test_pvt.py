import ast
import functools
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from mmvitattn.backbones import PVT, InLinePVT
from mmvitattn.backbones.pvt import PVTv2, convert_timm_pvt_v2
from mmvitattn.registry import MODELS

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'inline_official_keys'

# The InLine paper: parameters with the 1000-class head, in millions.
INLINE_PVT_PARAMS = {'t': 12.03, 's': 21.56, 'm': 37.62, 'l': 51.15}


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def fixture_layout(name):
    path = FIXTURES / f'{name}.tsv'
    rows = [line.split('\t') for line in path.read_text().splitlines() if line.strip()]
    return {key: tuple(ast.literal_eval(shape)) for key, shape in rows}


@pytest.mark.parametrize('arch', sorted(INLINE_PVT_PARAMS))
def test_inline_pvt_parameter_count_matches_paper(arch):
    model = InLinePVT(arch=arch, num_classes=1000)
    assert abs(count_params(model) / 1e6 - INLINE_PVT_PARAMS[arch]) < 0.005


@pytest.mark.parametrize('arch', ['t', 's'])
def test_inline_pvt_state_dict_has_the_official_layout(arch):
    official = fixture_layout(f'pvt_{arch}')
    ours = {k: tuple(v.shape) for k, v in InLinePVT(arch=arch, num_classes=1000).state_dict().items()}
    assert ours == official


@pytest.mark.parametrize('attention', ['inline', 'castling', 'armour', 'sra', 'softmax'])
def test_every_attention_builds_and_runs_forward_backward_on_a_non_square_input(attention):
    model = PVT(arch='t', attention=attention, depths=(1, 1, 1, 1))
    x = torch.randn(2, 3, 224, 320, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, c, 224 // s, 320 // s)
                                              for c, s in zip((64, 128, 320, 512), (4, 8, 16, 32))]
    sum(o.sum() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_input_not_a_multiple_of_the_strides_is_padded_up():
    model = InLinePVT(arch=None, depths=(1, 1, 1, 1))
    outs = model(torch.randn(1, 3, 100, 70))
    assert [o.shape[-2:] for o in outs] == [(25, 18), (13, 9), (7, 5), (4, 3)]


def test_out_indices_and_registry_build():
    model = MODELS.build(dict(type='InLinePVT', arch='t', out_indices=(1, 3)))
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [128, 512]


def test_frozen_stages_stay_frozen_and_in_eval_mode():
    model = InLinePVT(arch=None, depths=(1, 1, 1, 1), frozen_stages=1, drop_path_rate=0.1)
    model.train()
    for name, p in model.named_parameters():
        stage = next(c for c in name if c.isdigit())
        assert p.requires_grad == (int(stage) > 2), name
    assert not model.block1.training and not model.patch_embed2.training
    assert model.block3.training


def test_classifier_head():
    model = InLinePVT(arch=None, depths=(1, 1, 1, 1), num_classes=10)
    assert model.forward_classifier(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize('kwargs, message', [
    (dict(attention='linformer'), "unknown attention type 'linformer'"),
    (dict(attention=('inline', 'inline')), r'attention needs one entry per stage \(4\)'),
    (dict(attention='inline', num_heads=(2, 4, 7, 16)), 'num_heads=7 does not divide the embedding width 320'),
    (dict(attention='inline', arch='xl'), "unknown PVT arch 'xl'"),
    (dict(attention='inline', out_indices=(4, )), 'out_indices entry 4'),
    (dict(attention='inline', frozen_stages=4), 'frozen_stages=4'),
])
def test_bad_configuration_fails_at_build_time_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PVT(**kwargs)


def test_outputs_are_contiguous_nchw_for_ops_that_assume_it():
    """mmcv's CPU RoIAlign misreads channels-last memory; a backbone handing out such views
    silently breaks Mask R-CNN's RoI heads while the RPN still trains."""
    from mmcv.ops import RoIAlign
    model = InLinePVT(arch=None, depths=(1, 1, 1, 1), out_norm=True)
    feats = model(torch.randn(2, 3, 64, 96))
    assert all(f.is_contiguous() for f in feats)
    rois = torch.tensor([[0, 4.0, 4.0, 40.0, 30.0], [1, 10.0, 0.0, 60.0, 50.0]])
    align = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=2)
    reference = align(feats[0].detach().clone(memory_format=torch.contiguous_format), rois)
    torch.testing.assert_close(align(feats[0].detach(), rois), reference)


# ------------------------------------------------------------------------------------------------
# PVTv2 against timm's pvt_v2_* (softmax spatial-reduction attention)
# ------------------------------------------------------------------------------------------------
# PVTv2 paper, Table 1 (M, with the 1000-class head), and timm's exact counts for the same models.
PVT_V2_PARAMS = {'b0': (3.7, 3666760), 'b1': (14.0, 14009000), 'b2': (25.4, 25362856),
                 'b3': (45.2, 45238696), 'b4': (62.6, 62556072), 'b5': (82.0, 81956008)}


@functools.lru_cache(maxsize=None)
def timm_pvt_v2(arch):
    """timm pvt_v2_<arch> in eval mode with every norm affine and bias randomised (timm initialises
    them to 1 / 0, which would hide a missing or misplaced LayerNorm or bias)."""
    torch.manual_seed(0)
    model = timm.create_model(f'pvt_v2_{arch}', pretrained=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.add_(0.1 * torch.randn_like(p))
            elif p.dim() == 1:  # LayerNorm weights
                p.mul_(1 + 0.2 * torch.randn_like(p))
    return model


@functools.lru_cache(maxsize=None)
def our_pvt_v2(arch):
    model = PVTv2(arch=arch, num_classes=1000, out_indices=(0, 1, 2, 3)).eval()
    model.load_state_dict(convert_timm_pvt_v2(timm_pvt_v2(arch).state_dict(), model=model), strict=True)
    return model


@pytest.mark.parametrize('arch', sorted(PVT_V2_PARAMS))
def test_pvt_v2_parameter_count_matches_paper_and_timm(arch):
    paper, timm_count = PVT_V2_PARAMS[arch]
    count = count_params(PVTv2(arch=arch, num_classes=1000))
    assert count == timm_count
    assert abs(count / 1e6 - paper) < 0.05


@pytest.mark.parametrize('arch, size', [('b0', (224, 224)), ('b0', (224, 320)), ('b0', (200, 296)),
                                        ('b0', (97, 131)), ('b1', (224, 320))])
def test_pvt_v2_reproduces_timm_stage_maps_and_logits(arch, size):
    """All four stage maps (timm's forward_intermediates, NCHW, after each stage's norm) and the
    logits. Sizes not divisible by the strides need no special care: timm and we use the same
    padded convs (7x7/4 pad 3, 3x3/2 pad 1), so both give ceil(H / 4), ceil(H / 8), ... and the
    spatial-reduction convs floor alike (200x296 -> 50x74 ... 7x10)."""
    reference, ours = timm_pvt_v2(arch), our_pvt_v2(arch)
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        got = ours(x)
        logits_expected, logits = reference(x), ours.forward_classifier(x)
    assert len(got) == 4
    for e, g in zip(expected, got):
        assert g.shape == e.shape and g.is_contiguous()
        assert (g - e).abs().max().item() <= 1e-4
    assert (logits - logits_expected).abs().max().item() <= 1e-4


def test_pvt_v2_layers_have_timm_hyperparameters():
    """Same kernels, strides, paddings, groups and LayerNorm eps (1e-6 in blocks and stage norms,
    1e-5 in patch embeddings and spatial reductions) module by module, under the converted names."""
    reference = timm_pvt_v2('b0')
    ours = dict(our_pvt_v2('b0').named_modules())
    checked = 0
    for name, module in reference.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.LayerNorm, nn.Linear)):
            continue
        key, = convert_timm_pvt_v2({f'{name}.weight': module.weight}, model=our_pvt_v2('b0'))
        mine = ours[key.rsplit('.', 1)[0]]
        assert type(mine) in (type(module), nn.LayerNorm), name
        for attr in ('kernel_size', 'stride', 'padding', 'groups', 'eps', 'normalized_shape',
                     'in_features', 'out_features'):
            assert getattr(mine, attr, None) == getattr(module, attr, None), (name, attr)
        checked += 1
    assert checked > 50


def test_pvt_v2_converted_state_dict_loads_strictly_with_or_without_head():
    timm_state = timm_pvt_v2('b0').state_dict()
    classifier = PVTv2(arch='b0', num_classes=1000)
    result = classifier.load_state_dict(convert_timm_pvt_v2(timm_state, model=classifier), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    backbone = PVTv2(arch='b0')
    converted = convert_timm_pvt_v2(timm_state, model=backbone)
    assert not any(k.startswith('head.') for k in converted)
    result = backbone.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert {k for k in converted if k.startswith('norm')} == {f'norm{i}.{p}' for i in (1, 2, 3, 4)
                                                              for p in ('weight', 'bias')}


def test_pvt_v2_names_are_the_official_release_layout():
    """The official PVTv2 checkpoints differ from ours only in ``mlp.dwconv.dwconv``: timm's own
    filter for official checkpoints must read our names into its model, and our converter reads
    the official layout back."""
    from timm.models.pvt_v2 import checkpoint_filter_fn
    ours = our_pvt_v2('b0').state_dict()
    official = {k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.'): v for k, v in ours.items()}
    fresh_timm = timm.create_model('pvt_v2_b0', pretrained=False)
    result = fresh_timm.load_state_dict(checkpoint_filter_fn(official, fresh_timm), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    back = convert_timm_pvt_v2(official, model=our_pvt_v2('b0'))
    assert back.keys() == ours.keys()


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_pvt_v2_pretrained_init_cfg_loads_a_timm_checkpoint(tmp_path, fmt):
    state = {k: v.clone() for k, v in timm_pvt_v2('b0').state_dict().items()}
    path = tmp_path / f'pvt_v2_b0.{fmt}'
    if fmt == 'pth':
        torch.save({'state_dict': state}, path)
    else:
        from safetensors.torch import save_file
        save_file(state, str(path))
    model = MODELS.build(dict(type='PVTv2', arch='b0', out_indices=(1, 3),
                              init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = timm_pvt_v2('b0').forward_intermediates(x, indices=(1, 3), intermediates_only=True)
        got = model(x)
    for e, g in zip(expected, got):
        assert (g - e).abs().max().item() <= 1e-4


def test_pvt_v2_options_padding_mask_and_frozen_stage_norms():
    model = PVTv2(arch='b0', depths=(1, 1, 1, 1), out_norm=True, frozen_stages=1)
    assert model.attention == ('sra', ) * 4 and not hasattr(model, 'pos_embed1')
    assert model.norm1.eps == 1e-6 and model.block1[0].norm1.eps == 1e-6
    model.train()
    assert not model.norm2.weight.requires_grad and not model.norm2.training
    assert model.norm3.weight.requires_grad
    x = torch.randn(2, 3, 96, 128)
    pad_mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    pad_mask[1, :, 100:] = True
    outs = model(x, pad_mask)
    assert [tuple(o.shape) for o in outs] == [(2, c, 96 // s, 128 // s)
                                              for c, s in zip((32, 64, 160, 256), (4, 8, 16, 32))]
    # Another mixer inside the PVTv2 trunk is a configuration too.
    inline = PVTv2(arch='b0', attention='inline', depths=(1, 1, 1, 1))
    assert inline(torch.randn(1, 3, 64, 64))[-1].shape == (1, 256, 2, 2)
    with pytest.raises(ValueError, match="unknown PVTv2 arch 'b9'"):
        PVTv2(arch='b9')


def test_stage_norm_is_off_and_block_eps_is_the_released_1e6_in_pvt():
    model = InLinePVT(arch='t')  # InLine-PVT / PVTv1 factories: norm_layer=partial(nn.LayerNorm, eps=1e-6)
    assert not hasattr(model, 'norm1') and model.block1[0].norm1.eps == 1e-6
