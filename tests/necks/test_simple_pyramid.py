"""The simple feature pyramid as a neck after a plain trunk: the same function as the ViT's own
``out_type='simple_pyramid'``, and padding-aware (an image gets the pyramid it gets alone)."""
import torch

from mmvitattn.backbones import ViT
from mmvitattn.necks import SimpleFeaturePyramid
from mmvitattn.registry import MODELS

TRUNK = dict(arch=None, embed_dim=32, depth=2, num_heads=2, pretrain_img_size=64, attention='inline',
             with_cls_token=False)


def neck_like(vit):
    """A neck holding the ViT's own pyramid weights (``pyramid.k`` -> ``rescales.k``, ``out_norms.k``
    -> ``norms.k``)."""
    neck = MODELS.build(dict(type='mmvitattn.SimpleFeaturePyramid', in_channels=32, out_channels=24))
    state = {k.replace('pyramid.', 'rescales.', 1).replace('out_norms.', 'norms.', 1): v
             for k, v in vit.state_dict().items() if k.startswith(('pyramid.', 'out_norms.'))}
    neck.load_state_dict(state)
    return neck.eval()


def padded_pair():
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(2, 3, 80, 112, generator=g)
    pad = torch.zeros(2, 80, 112, dtype=torch.bool)
    pad[1, 48:] = True
    pad[1, :, 72:] = True  # the small image is 48 x 72: an odd 3 x 5 map at stride 16
    batch[1][:, pad[1]] = 0
    return batch, pad


def test_the_neck_after_a_plain_trunk_equals_the_vit_pyramid():
    torch.manual_seed(0)
    vit = ViT(**TRUNK, out_type='simple_pyramid', out_channels=24).eval()
    trunk = ViT(**TRUNK, final_norm=False).eval()
    trunk.load_state_dict({k: v for k, v in vit.state_dict().items()
                           if not k.startswith(('pyramid.', 'out_norms.'))}, strict=False)
    neck = neck_like(vit)
    batch, pad = padded_pair()
    with torch.no_grad():
        for mask in (None, pad):
            expected = vit(batch, mask)
            got = neck(trunk(batch, mask))
            assert [t.shape for t in got] == [t.shape for t in expected]
            for g, e in zip(got, expected):
                torch.testing.assert_close(g, e, rtol=0, atol=1e-6)


def test_padded_batch_gives_the_small_image_its_own_pyramid():
    torch.manual_seed(0)
    trunk = ViT(**TRUNK).eval()
    neck = SimpleFeaturePyramid(32, out_channels=(8, 16, 24, 32)).eval()
    batch, pad = padded_pair()
    with torch.no_grad():
        together = neck(trunk(batch, pad))
        alone = neck(trunk(batch[1:, :, :48, :72]))
    for t, a in zip(together, alone):
        h, w = a.shape[-2:]
        assert (t[1:, :, :h, :w] - a).abs().max() <= 1e-5
        assert t[1:, :, h:].abs().max() == 0 and t[1:, :, :, w:].abs().max() == 0
    # The stride-32 level pools an odd map: without the mask the border window would see zeros.
    assert together[3].shape[-2:] == (3, 4) and alone[3].shape[-2:] == (2, 3)


def test_the_readme_neck_config_builds_and_runs():
    """The README's snippet, as written: the plain trunk, the pyramid neck, then mmdet's FPN."""
    import re
    from pathlib import Path

    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import init_default_scope
    text = (Path(__file__).resolve().parents[2] / 'README.md').read_text()
    (snippet, ) = [b for b in re.findall(r'```python\n(.*?)```', text, re.S) if 'SimpleFeaturePyramid' in b]
    scope = {}
    exec(snippet, scope)
    model = scope['model']
    init_default_scope('mmdet')
    backbone = MMDET_MODELS.build({k: v for k, v in model['backbone'].items() if k != '_delete_'}).eval()
    necks = [MMDET_MODELS.build(cfg).eval() for cfg in model['neck']]
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 64, 96))
        for neck in necks:
            feats = neck(feats)
    assert [f.shape[-2:] for f in feats][:4] == [(16, 24), (8, 12), (4, 6), (2, 3)]
