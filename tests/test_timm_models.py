"""The classification variants registered with timm: same modules and keys as the backbones."""
import argparse

import pytest
import torch

import mmvitattn  # noqa: F401  (registers the timm names)
from mmvitattn.backbones import InLinePVT
from mmvitattn.checkpoint import load_pretrained
from mmvitattn.engine import set_castling_aux
from mmvitattn.timm_models import TIMM_MODELS

timm = pytest.importorskip('timm')


def test_every_family_is_registered():
    assert set(TIMM_MODELS) <= set(timm.list_models())
    for family in ('inline_deit', 'inline_pvt', 'inline_swin', 'inline_cswin', 'castling_deit', 'armour_deit',
                   'armour_levit', 'armour_plus_levit'):
        assert timm.list_models(f'{family}_*'), family


def test_a_timm_trained_checkpoint_loads_straight_into_a_detection_backbone(tmp_path):
    model = timm.create_model('inline_pvt_t', num_classes=10, drop_path_rate=0.1, in_chans=3)
    assert model(torch.randn(2, 3, 64, 96)).shape == (2, 10)
    assert timm.data.resolve_data_config({}, model=model)['input_size'] == (3, 224, 224)
    assert {k for k in model.state_dict()} == set(InLinePVT(arch='t', num_classes=10).state_dict())
    path = tmp_path / 'model_best.pth.tar'
    torch.save({'epoch': 1, 'arch': 'inline_pvt_t', 'state_dict': model.state_dict(),
                'args': argparse.Namespace(model='inline_pvt_t')}, path)
    backbone = InLinePVT(arch='t', out_norm=True)
    report = load_pretrained(backbone, str(path), logger=None)
    assert set(report.dropped) == {'head.weight', 'head.bias'}
    assert all(k.startswith('out_norm') for k in report.new)
    assert torch.equal(backbone.block3[1].attn.kv.weight, model.block3[1].attn.kv.weight)


def test_castling_switch_in_the_classifier():
    model = timm.create_model('castling_deit_t', num_classes=5, attn_cfgs=dict(aux_softmax=True))
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        linear_only = model(x)
        model.train()
        with_branch = model(x)
        assert set_castling_aux(model, coef=0.0) == 12
        switched_off = model(x)
    assert not torch.allclose(with_branch, linear_only, atol=1e-4)
    assert torch.equal(switched_off, linear_only)


def test_unsupported_requests_fail_clearly():
    with pytest.raises(ValueError, match="no hosted ImageNet weights for 'inline_swin_t'"):
        timm.create_model('inline_swin_t', pretrained=True)
    with pytest.raises(ValueError, match='drop_rate'):
        timm.create_model('inline_pvt_t', drop_rate=0.1)
