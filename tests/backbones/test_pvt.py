import ast
from pathlib import Path

import pytest
import torch

from mmvitattn.backbones import PVT, InLinePVT
from mmvitattn.registry import MODELS

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'inline_official_keys'

# METHODS.md / the InLine paper: parameters with the 1000-class head, in millions.
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


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = InLinePVT(arch=None, depths=(1, 1, 1, 1))
    checkpointed = InLinePVT(arch=None, depths=(1, 1, 1, 1), with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 96)
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_drop_path_is_stochastic_in_training_only():
    model = InLinePVT(arch=None, depths=(2, 2, 2, 2), drop_path_rate=0.5)
    x = torch.randn(1, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


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
