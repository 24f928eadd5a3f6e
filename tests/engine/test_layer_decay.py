"""Layer-wise learning-rate decay for plain-ViT detectors."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from torch import nn

import mmvitattn  # noqa: F401  (registers the constructor)
from mmvitattn.backbones import InLineViT


class TinyDetector(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = InLineViT(arch=None, embed_dim=32, depth=3, num_heads=2, out_indices=(2, ))
        self.neck = nn.Linear(32, 8)


def build(rate=0.5, **paramwise):
    cfg = dict(constructor='mmvitattn.LayerDecayOptimWrapperConstructor',
               optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
               paramwise_cfg=dict(layer_decay_rate=rate, custom_keys={'pos_embed': dict(decay_mult=0.0)}, **paramwise))
    model = TinyDetector()
    groups = build_optim_wrapper(model, cfg).optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g['params'][0])]: g for g in groups}


def test_lr_decays_by_depth_and_keeps_the_no_decay_keys():
    groups = build()
    depth = 3  # taken from backbone.depth
    expected = {'backbone.pos_embed': 0.5**(depth + 1), 'backbone.patch_embed.proj.weight': 0.5**(depth + 1),
                'backbone.blocks.0.attn.qkv.weight': 0.5**depth, 'backbone.blocks.2.mlp.fc1.weight': 0.5,
                'neck.weight': 1.0}
    for name, scale in expected.items():
        assert groups[name]['lr'] == pytest.approx(1e-3 * scale), name
    assert groups['backbone.pos_embed']['weight_decay'] == 0.0
    assert groups['backbone.blocks.0.attn.qkv.weight']['weight_decay'] == 0.05
    assert len(groups) == sum(1 for _ in TinyDetector().parameters())


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match=r'layer_decay_rate must be a number in \(0, 1\], got 1.5'):
        build(rate=1.5)
