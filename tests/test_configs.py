"""Every config in configs/ parses, builds its model, runs one training step and one prediction
on a tiny CPU input (the full-size models, small images)."""
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmvitattn  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
SLOW = pytest.mark.skipif(os.environ.get('MMVITATTN_SLOW') != '1', reason='slow: set MMVITATTN_SLOW=1 to run')
# Configs whose model repeats one tested in the fast suite but for its width or dataset recipe
# (the wider ViTDet-B variants; the ADE20K-640 / Cityscapes variants other than InLine-PVT-T's):
# built and trained with MMVITATTN_SLOW=1, to keep the suite's time on 2 cores.
VARIANTS = {c for c in CONFIGS if ('/vitdet/' in c and '-b-' in c or '_inline-deit-b_' in c or '_castling-deit-b_' in c)
            or (('ade20k-640x640' in c or 'cityscapes' in c) and '_inline-pvt-t_' not in c)}


def with_variants_slow(configs):
    return [pytest.param(c, marks=SLOW) if c in VARIANTS else c for c in configs]


def detection_batch(num_classes):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 128, 160), (3, 96, 128)], num_items=[3, 2],
                          num_classes=num_classes, with_mask=True)


def segmentation_batch(num_classes):
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for h, w in [(128, 160)] * 2:  # mmseg predicts a batch of one size only
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def fewer_samples(model_cfg):
    """Sample fewer proposals and RoIs than the recipe (the step's cost is the heads' on CPU);
    the model itself is unchanged."""
    train_cfg, test_cfg = model_cfg.get('train_cfg', {}), model_cfg.get('test_cfg', {})
    for cfg in (train_cfg.get('rpn_proposal'), test_cfg.get('rpn')):
        if cfg:
            cfg.update(nms_pre=200, max_per_img=50)
    rcnn = train_cfg.get('rcnn')
    for stage in (rcnn if isinstance(rcnn, list) else [rcnn] if rcnn else []):
        stage.sampler.num = 32
    # ViTDet's recipe pads every training batch to 1024 x 1024; the test's small images stay small.
    model_cfg.data_preprocessor.pop('batch_augments', None)


def test_there_are_configs_for_each_task():
    assert any('mask_rcnn' in c for c in CONFIGS)
    assert any('retinanet' in c for c in CONFIGS)
    assert any('upernet' in c for c in CONFIGS)


@pytest.mark.parametrize('path', with_variants_slow(CONFIGS))
def test_config_builds_trains_a_step_and_predicts(path):
    cfg = Config.fromfile(str(REPO / path))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
        head = cfg.model.get('roi_head', {}).get('bbox_head', cfg.model.get('bbox_head'))
        head = head[0] if isinstance(head, list) else head  # Cascade R-CNN: one head per stage
        data = detection_batch(head['num_classes'])
        fewer_samples(cfg.model)
    else:
        from mmseg.registry import MODELS
        cfg.model.data_preprocessor.size = None  # no 512x512 padding: keep the step fast
        cfg.model.data_preprocessor.size_divisor = 32
        data = segmentation_batch(cfg.model.decode_head.num_classes)
    cfg.model.backbone.init_cfg = None  # ImageNet files are not part of the test data (next test)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}

    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    changed = [n for n, p in model.backbone.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) > len(before) // 2, 'the optimizer step did not reach the backbone'

    model.eval()
    with torch.no_grad():
        predictions = model.val_step(data)
    assert len(predictions) == 2
    if cfg.default_scope == 'mmdet':
        assert all('pred_instances' in p for p in predictions)
    else:
        assert predictions[0].pred_sem_seg.data.shape[-2:] == (128, 160)


@pytest.mark.parametrize('path', with_variants_slow([c for c in CONFIGS if '/demo/' not in c]))
def test_config_expects_a_documented_checkpoint_and_says_so_when_missing(path, tmp_path, monkeypatch):
    cfg = Config.fromfile(str(REPO / path))
    init_cfg = cfg.model.backbone.init_cfg
    assert init_cfg.type == 'Pretrained' and init_cfg.checkpoint.startswith('checkpoints/')
    assert f'`{init_cfg.checkpoint}`' in (REPO / 'README.md').read_text(), 'not in the README checkpoint table'
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    model = registry.build(cfg.model)
    with pytest.raises(FileNotFoundError, match=f'pretrained checkpoint not found: {init_cfg.checkpoint}.*init_cfg=None'):
        model.init_weights()
