"""One training step and one prediction of a config on a tiny CPU batch (the full-size model,
small images): what the config tests and tools/analysis/trace_mmcv_ops.py run."""
import contextlib
from typing import Tuple

import torch
from mmengine.config import Config


def detection_batch(num_classes: int):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 128, 160), (3, 96, 128)], num_items=[3, 2],
                          num_classes=num_classes, with_mask=True)


def segmentation_batch(num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for h, w in [(128, 160)] * 2:  # mmseg predicts a batch of one size only
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def fewer_samples(model_cfg) -> None:
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


def keep_detections(model_cfg, max_per_img: int = 10) -> None:
    """Random weights score below the recipes' thresholds, and post-processing (NMS, masks) is
    skipped for an empty set: keep the best boxes whatever their score, and soft masks."""
    test_cfg = model_cfg.get('test_cfg', {})
    for cfg in (test_cfg.get('rcnn'), test_cfg if 'score_thr' in test_cfg else None):
        if cfg:
            cfg.update(score_thr=0.0, max_per_img=max_per_img)
            if 'mask_thr_binary' in cfg:
                cfg.mask_thr_binary = -1  # mmdet keeps the mask probabilities


def step_setup(path: str) -> Tuple[Config, dict, object]:
    """The config (its default scope set), a tiny batch for it and its task's model registry."""
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
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
    cfg.model.backbone.init_cfg = None  # ImageNet files are not part of the test data
    return cfg, data, MODELS


def build_model(cfg: Config, registry, seed: int = 0):
    """The config's model with SyncBN reverted to BN (one CPU process), initialised from ``seed``."""
    from mmengine.model import revert_sync_batchnorm
    torch.manual_seed(seed)
    model = revert_sync_batchnorm(registry.build(cfg.model))
    model.init_weights()
    return model


def train_step_and_predict(model, cfg: Config, data: dict, seed: int = 0):
    """One optimizer step (returns its logged losses) then a prediction in eval mode."""
    from mmengine.optim import build_optim_wrapper
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    torch.manual_seed(seed)  # the samplers draw from torch's generator
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    model.eval()
    with torch.no_grad():
        predictions = model.val_step(data)
    return log_vars, predictions


@contextlib.contextmanager
def focal_loss_on_mmcv_op():
    """Make mmdet's ``FocalLoss`` with class-index targets (RetinaNet's) take the branch it takes
    for CUDA tensors (mmcv's compiled ``sigmoid_focal_loss``) on CPU too, where it would one-hot
    the targets for its Python formula: with the fallback ops forced, a CPU step then runs the op
    a GPU step runs."""
    from mmdet.models.losses import focal_loss

    def through_mmcv_op(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction='mean', avg_factor=None):
        labels = torch.where(target.any(1), target.argmax(1), target.shape[1])  # one-hot -> index (C: none)
        return focal_loss.sigmoid_focal_loss(pred, labels.long(), weight, gamma=gamma, alpha=alpha,
                                             reduction=reduction, avg_factor=avg_factor)

    python_formula = focal_loss.py_sigmoid_focal_loss
    focal_loss.py_sigmoid_focal_loss = through_mmcv_op
    try:
        yield
    finally:
        focal_loss.py_sigmoid_focal_loss = python_formula
