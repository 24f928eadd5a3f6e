"""An image's backbone features do not depend on what it is batched with.

The valid sizes travel as in a real detector / segmentor forward: stock mmdet/mmseg model,
our data preprocessor (pads the batch, attaches the pixel mask to the inputs tensor), then
``model.extract_feat(inputs)`` (the stock path that calls ``backbone(inputs)``). The reference
is the image run alone through the same model, where nothing is padded (pad divisor 1), i.e.
the plain unmasked path.
"""
import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmvitattn  # noqa: F401
from mmvitattn.backbones.common import PAD_MASK_ATTR
from mmvitattn.models import PadMaskDetDataPreprocessor, PadMaskSegDataPreProcessor

TOL = 1e-4
MEAN, STD = [120.0, 115.0, 105.0], [58.0, 57.0, 57.0]

# Tiny configurations covering every family and every attention it offers.
PVT_TINY = dict(arch=None, depths=(1, 1, 1, 1), embed_dims=(16, 16, 32, 32), num_heads=(2, 2, 2, 2),
                mlp_ratios=(2, 2, 2, 2))
SWIN_TINY = dict(arch=None, embed_dims=16, num_heads=(2, 2, 2, 2), window_size=3)
CSWIN_TINY = dict(arch=None, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))
VIT_TINY = dict(arch=None, embed_dim=32, depth=2, num_heads=2, pretrain_img_size=64)
LEVIT_TINY = dict(arch=None, embed_dims=(32, 48, 64), key_dim=8, num_heads=(2, 3, 4), depths=(1, 1, 1))

BACKBONES = {
    'vit-softmax': dict(type='mmvitattn.ViT', attention='softmax', **VIT_TINY),
    'vit-inline': dict(type='mmvitattn.ViT', attention='inline', **VIT_TINY),
    'vit-castling': dict(type='mmvitattn.ViT', attention='castling', **VIT_TINY),
    'vit-armour': dict(type='mmvitattn.ViT', attention='armour', **VIT_TINY),
    'vit-inline-nocls-pyramid': dict(type='mmvitattn.ViT', attention='inline', with_cls_token=False,
                                     out_type='simple_pyramid', out_channels=24, **VIT_TINY),
    'vit-castling-multilevel': dict(type='mmvitattn.ViT', attention='castling', out_type='multi_level',
                                    out_indices=(0, 1), out_strides=(8, 32), **VIT_TINY),
    'pvt-sra': dict(type='mmvitattn.PVT', attention='sra', sr_ratios=(4, 2, 2, 1), **PVT_TINY),
    'pvt-inline': dict(type='mmvitattn.PVT', attention='inline', **PVT_TINY),
    'pvt-castling': dict(type='mmvitattn.PVT', attention='castling', **PVT_TINY),
    'pvt-armour': dict(type='mmvitattn.PVT', attention='armour', **PVT_TINY),
    'pvt-softmax': dict(type='mmvitattn.PVT', attention='softmax', **PVT_TINY),
    'pvtv2-sra': dict(type='mmvitattn.PVTv2', attention='sra', sr_ratios=(4, 2, 2, 1), **PVT_TINY),
    'pvtv2-inline': dict(type='mmvitattn.PVTv2', attention='inline', **PVT_TINY),
    'swin-window-inline-castling-armour': dict(type='mmvitattn.Swin', depths=(2, 1, 1, 1),
                                               attention=('S', 'I', 'C', 'A'), **SWIN_TINY),
    'swin-inline-window': dict(type='mmvitattn.Swin', depths=(1, 2, 2, 2), attention=('I', 'S', 'S', 'S'),
                               **SWIN_TINY),
    'swin-softmax': dict(type='mmvitattn.Swin', depths=(1, 1, 1, 1), attention='softmax', **SWIN_TINY),
    'cswin-inline-stripes': dict(type='mmvitattn.CSwin', attention=('inline', 'inline', 'cswin', 'cswin'),
                                 split_sizes=(1, 2, 2, None), **CSWIN_TINY),
    'cswin-stripes': dict(type='mmvitattn.CSwin', attention='cswin', split_sizes=(2, 3, 2, None),
                          **CSWIN_TINY),
    'cswin-castling-armour': dict(type='mmvitattn.CSwin', attention=('castling', 'armour', 'cswin', 'cswin'),
                                  split_sizes=(1, 2, 2, None), **CSWIN_TINY),
    'levit-softmax': dict(type='mmvitattn.LeViT', attention='softmax', out_indices=(0, 1, 2, 3, 4),
                          **LEVIT_TINY),
    'levit-armour': dict(type='mmvitattn.LeViT', attention='armour', **LEVIT_TINY),
    'levit-armour-plus': dict(type='mmvitattn.LeViT', attention='armour_plus', attn_bias_mode='clamp',
                              **LEVIT_TINY),
}

# (small image, large image) heights/widths: odd sizes exercise the border of every stride.
SMALL, LARGE = (50, 70), (100, 131)


def images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *hw), generator=g).float() for hw in (SMALL, LARGE)]


def build_detector(backbone):
    """A stock mmdet detector (RetinaNet without neck) with our preprocessor; only extract_feat
    is used."""
    init_default_scope('mmdet')
    cfg = dict(
        type='RetinaNet',
        data_preprocessor=dict(type='mmvitattn.PadMaskDetDataPreprocessor', mean=MEAN, std=STD,
                               pad_size_divisor=1),
        backbone=backbone,
        neck=None,
        bbox_head=dict(type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                       anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                             ratios=[1.0], strides=[8]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder')))
    torch.manual_seed(0)
    model = ROOT_MODELS.build(cfg)
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            # LeViT starts its residual branches' BatchNorms at zero (identity blocks): random
            # statistics make every attention matter.
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def det_batch(imgs):
    from mmdet.structures import DetDataSample
    samples = []
    for img in imgs:
        s = DetDataSample(metainfo=dict(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:])))
        s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        samples.append(s)
    return dict(inputs=list(imgs), data_samples=samples)


def features(model, imgs, training=False):
    data = model.data_preprocessor(det_batch(imgs), training)
    with torch.no_grad():
        return data['inputs'], model.extract_feat(data['inputs'])


def max_region_diff(alone, batched, index):
    worst = 0.0
    for a, b in zip(alone, batched):
        h, w = a.shape[-2:]
        assert b.shape[-2] >= h and b.shape[-1] >= w
        worst = max(worst, (a[0] - b[index, :, :h, :w]).abs().max().item())
    return worst


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_features_alone_equal_batched(name):
    model = build_detector(BACKBONES[name])
    small, large = images()
    inputs, alone = features(model, [small])
    assert getattr(inputs, PAD_MASK_ATTR, None) is None  # one image, divisor 1: nothing padded
    inputs, batched = features(model, [large, small])
    mask = getattr(inputs, PAD_MASK_ATTR)
    assert mask.shape == (2, *LARGE) and not mask[0].any()
    assert mask[1].sum() == LARGE[0] * LARGE[1] - SMALL[0] * SMALL[1]
    assert max_region_diff(alone, batched, 1) <= TOL, name
    # The large image is not padded: its features equal its own run as well.
    _, large_alone = features(model, [large])
    assert max_region_diff(large_alone, batched, 0) <= TOL, name
    # Padded positions leave the backbone as zeros (what a neck's convs pad with alone).
    for a, b in zip(alone, batched):
        h, w = a.shape[-2:]
        assert b[1, :, h:].abs().max().item() == 0 if b.shape[-2] > h else True
        assert b[1, :, :, w:].abs().max().item() == 0 if b.shape[-1] > w else True


@pytest.mark.parametrize('name', ['pvt-inline', 'swin-window-inline-castling-armour'])
def test_without_the_mask_padding_leaks(name):
    """The check above can fail: the same batch without the mask moves the small image's
    features (so the mask is what makes them equal)."""
    model = build_detector(BACKBONES[name])
    small, large = images()
    _, alone = features(model, [small])
    inputs, _ = features(model, [large, small])
    with torch.no_grad():
        setattr(inputs, PAD_MASK_ATTR, None)
        unmasked = model.extract_feat(inputs)
    assert max_region_diff(alone, unmasked, 1) > 1e-3


def test_explicit_mask_equals_attached_mask():
    model = build_detector(BACKBONES['pvt-castling'])
    inputs, batched = features(model, [images()[1], images()[0]])
    mask = getattr(inputs, PAD_MASK_ATTR)
    plain = inputs.clone()  # a derived tensor carries no mask
    with torch.no_grad():
        explicit = model.backbone(plain, pad_mask=mask)
    for a, b in zip(explicit, batched):
        assert torch.equal(a, b)


@pytest.mark.parametrize('name', ['vit-inline', 'pvt-sra', 'levit-softmax', 'swin-window-inline-castling-armour',
                                  'cswin-inline-stripes'])
def test_backbones_read_the_real_sizes_the_preprocessor_attaches(name, monkeypatch):
    """The attached mask carries each image's real (h, w); no backbone rebuilds them from a mask."""
    import mmvitattn.padding as padding
    model = build_detector(BACKBONES[name])
    small, large = images()
    data = model.data_preprocessor(det_batch([large, small]), False)
    mask = getattr(data['inputs'], PAD_MASK_ATTR)
    assert getattr(mask, padding.PAD_SIZES_ATTR) == [LARGE, SMALL]

    def rebuilt(*args, **kwargs):
        raise AssertionError('real sizes rebuilt from a mask')

    monkeypatch.setattr(padding, 'real_sizes', rebuilt)
    with torch.no_grad():
        model.extract_feat(data['inputs'])


def test_unpadded_batch_attaches_no_mask():
    model = build_detector(BACKBONES['pvt-inline'])
    small = images()[0]
    inputs, _ = features(model, [small, small.flip(-1)])
    assert getattr(inputs, PAD_MASK_ATTR, None) is None


def test_seg_preprocessor_mask_matches_img_shape():
    """mmseg pads in training (to ``size`` or a divisor) and, with ``test_cfg``, at test time; the
    mask follows each sample's unpadded size in both."""
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    pre = ROOT_MODELS.build(dict(type='mmvitattn.PadMaskSegDataPreProcessor', mean=MEAN, std=STD,
                                 size_divisor=32, test_cfg=dict(size_divisor=32)))
    small, large = images()
    samples = [SegDataSample(metainfo=dict(img_shape=tuple(i.shape[1:]))) for i in (large, small)]
    data = pre(dict(inputs=[large, small], data_samples=samples), True)
    mask = getattr(data['inputs'], PAD_MASK_ATTR)
    assert data['inputs'].shape[-2:] == (128, 160)
    for m, img in zip(mask, (large, small)):
        h, w = img.shape[1:]
        assert not m[:h, :w].any() and m[h:].all() and m[:, w:].all()
    # Test time: mmseg batches equal sizes and pads them to the divisor.
    samples = [SegDataSample(metainfo=dict(img_shape=SMALL))]
    data = pre(dict(inputs=[small], data_samples=samples), False)
    mask = getattr(data['inputs'], PAD_MASK_ATTR)
    assert mask.shape == (1, 64, 96) and int((~mask).sum()) == SMALL[0] * SMALL[1]


def test_preprocessor_rejects_metadata_that_does_not_fit():
    init_default_scope('mmdet')
    pre = ROOT_MODELS.build(dict(type='mmvitattn.PadMaskDetDataPreprocessor', mean=MEAN, std=STD))
    batch = det_batch([images()[0]])
    batch['data_samples'][0].set_metainfo(dict(img_shape=(500, 500)))
    with pytest.raises(ValueError, match=r'img_shape \(500, 500\), larger than the batch'):
        pre(batch, False)


def test_backbone_rejects_bad_masks():
    from mmvitattn.backbones import InLinePVT
    model = InLinePVT(**PVT_TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r'pad_mask must have shape \(2, 32, 32\)'):
        model(x, pad_mask=torch.zeros(2, 16, 16, dtype=torch.bool))
    holes = torch.zeros(2, 32, 32, dtype=torch.bool)
    holes[0, 5, 5] = True
    with pytest.raises(ValueError, match='top-left rectangle'):
        model(x, pad_mask=holes)
    everything = torch.zeros(2, 32, 32, dtype=torch.bool)
    everything[1] = True
    with pytest.raises(ValueError, match='every pixel of an image'):
        model(x, pad_mask=everything)
    setattr(x, PAD_MASK_ATTR, torch.zeros(2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match='attached to the inputs must have shape'):
        model(x)


def test_classes_exported():
    assert PadMaskDetDataPreprocessor is not None and PadMaskSegDataPreProcessor is not None
