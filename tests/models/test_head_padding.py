"""Whole models of ours (random weights, fixed seed): the small image batched with a larger one
vs alone, with and without the padding-aware backbone path.

Asserted: with the path, the backbone features of the small image do not move (<= 1e-4); without
it they do. Reported (printed, ``pytest -s``): how far the neck / head outputs move. Those are
upstream mmdet/mmseg layers whose convs still see the padded border (an FPN's 3x3 convs and
top-down upsampling, UperNet's PPM pooling over the whole padded map), so they may differ near
the border even with the path.
"""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import init_default_scope

import mmvitattn  # noqa: F401
from mmvitattn.backbones.common import PAD_MASK_ATTR

DET_CONFIG = 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'
SEG_CONFIG = 'configs/demo/upernet_inline-pvt-nano_ade20k-demo.py'
SMALL, LARGE = (96, 120), (160, 200)


def build(path, scope):
    init_default_scope(scope)
    cfg = Config.fromfile(path)
    torch.manual_seed(0)
    model = ROOT_MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def smooth_images(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for hw in (SMALL, LARGE):
        coarse = torch.rand(1, 3, hw[0] // 8, hw[1] // 8, generator=g) * 255
        out.append(torch.nn.functional.interpolate(coarse, size=hw, mode='bilinear')[0])
    return out


def region_diff(a, b, index):
    h, w = a.shape[-2:]
    return (a[0] - b[index, ..., :h, :w]).abs().max().item()


def det_data(imgs):
    from mmdet.structures import DetDataSample
    samples = [DetDataSample(metainfo=dict(img_shape=tuple(i.shape[1:]), ori_shape=tuple(i.shape[1:]),
                                           scale_factor=(1.0, 1.0))) for i in imgs]
    return dict(inputs=list(imgs), data_samples=samples)


def box_iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-6)


def compare_detections(alone, batched, top=10):
    """For the alone run's top detections: best IoU with a same-label batched detection and the
    score change of that match."""
    a, b = alone.pred_instances, batched.pred_instances
    a = a[a.scores.argsort(descending=True)[:top]]
    iou = box_iou(a.bboxes, b.bboxes) * (a.labels[:, None] == b.labels[None, :])
    best, idx = iou.max(dim=1) if len(b) else (torch.zeros(len(a)), torch.zeros(len(a), dtype=torch.long))
    score_diff = (a.scores - b.scores[idx]).abs() if len(b) else a.scores
    return dict(n=len(a), min_iou=best.min().item(), mean_iou=best.mean().item(),
                max_score_diff=score_diff.max().item())


@pytest.fixture(scope='module')
def mask_rcnn():
    return build(DET_CONFIG, 'mmdet')


def test_mask_rcnn_small_image_batched_vs_alone(mask_rcnn):
    model = mask_rcnn
    small, large = smooth_images()
    results = {}
    with torch.no_grad():
        alone_data = model.data_preprocessor(det_data([small]), False)
        alone_feats = model.backbone(alone_data['inputs'])
        alone_neck = model.neck(alone_feats)
        alone_pred = model.predict(alone_data['inputs'], alone_data['data_samples'])[0]
        for path in ('with padding path', 'without'):
            data = model.data_preprocessor(det_data([large, small]), False)
            if path == 'without':
                setattr(data['inputs'], PAD_MASK_ATTR, None)
            feats = model.backbone(data['inputs'])
            neck = model.neck(feats)
            pred = model.predict(data['inputs'], data['data_samples'])[1]
            results[path] = dict(backbone=max(region_diff(a, b, 1) for a, b in zip(alone_feats, feats)),
                                 fpn=max(region_diff(a, b, 1) for a, b in zip(alone_neck, neck)),
                                 **compare_detections(alone_pred, pred))
    for path, r in results.items():
        print(f'\nMask R-CNN (InLine-PVT nano), small image batched vs alone, {path}: backbone max|diff| '
              f'{r["backbone"]:.2e}, FPN max|diff| {r["fpn"]:.2e}, top-{r["n"]} detections: min IoU '
              f'{r["min_iou"]:.3f}, mean IoU {r["mean_iou"]:.3f}, max score diff {r["max_score_diff"]:.2e}')
    assert results['with padding path']['backbone'] <= 1e-4
    assert results['without']['backbone'] > 1e-3


def test_upernet_small_image_batched_vs_alone():
    from mmseg.structures import SegDataSample
    model = build(SEG_CONFIG, 'mmseg')
    small, large = smooth_images(1)

    def data(imgs):
        samples = [SegDataSample(metainfo=dict(img_shape=tuple(i.shape[1:]))) for i in imgs]
        # training=True: mmseg's stack_batch pads mixed sizes (its test mode only batches one size).
        return model.data_preprocessor(dict(inputs=list(imgs), data_samples=samples), True)

    results = {}
    with torch.no_grad():
        alone_in = data([small])['inputs']
        alone_feats = model.backbone(alone_in)
        alone_logits = model.decode_head(alone_feats)
        for path in ('with padding path', 'without'):
            inputs = data([large, small])['inputs']
            if path == 'without':
                setattr(inputs, PAD_MASK_ATTR, None)
            feats = model.backbone(inputs)
            logits = model.decode_head(feats)
            h, w = alone_logits.shape[-2:]
            region = logits[1:2, :, :h, :w]
            agree = (region.argmax(1) == alone_logits.argmax(1)).float().mean().item()
            results[path] = dict(backbone=max(region_diff(a, b, 1) for a, b in zip(alone_feats, feats)),
                                 logits=(region - alone_logits).abs().max().item(), agree=agree)
    for path, r in results.items():
        print(f'\nUperNet (InLine-PVT nano), small image batched vs alone, {path}: backbone max|diff| '
              f'{r["backbone"]:.2e}, logits max|diff| {r["logits"]:.2e}, argmax agreement {100 * r["agree"]:.1f}%')
    assert results['with padding path']['backbone'] <= 1e-4
    assert results['without']['backbone'] > 1e-3
