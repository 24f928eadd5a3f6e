"""The tensor-in, tensors-out networks that are exported: a backbone, a segmentor up to its logits,
a detector up to its raw head outputs. Post-processing (box decoding, NMS, RoI heads) stays in
Python, where mmdet runs it from these outputs (see the README, "Deployment").

Each graph takes one (B, 3, H, W) float tensor ``images``: already normalised by the model's
data preprocessor, and unpadded (a batch of same-size images), so no padding mask is involved.
"""
import os
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

PARTS = ('backbone', 'model')


class BackboneGraph(nn.Module):
    """images -> the backbone's feature maps ``feat0``, ``feat1``, ..."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.backbone(images))

    def output_names(self, num_outputs: int) -> List[str]:
        return [f'feat{i}' for i in range(num_outputs)]


class SegmentorGraph(nn.Module):
    """images -> ``logits`` (B, num_classes, H, W): mmseg's ``EncoderDecoder.encode_decode`` for an
    unpadded batch (decode head on the backbone/neck features, resized bilinearly to the input)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        head = self.segmentor.decode_head
        logits = head(self.segmentor.extract_feat(images))
        return F.interpolate(logits, size=images.shape[2:], mode='bilinear', align_corners=head.align_corners)

    def output_names(self, num_outputs: int) -> List[str]:
        return ['logits']


class DenseDetectorGraph(nn.Module):
    """Single-stage detector: images -> ``cls_score{i}``, ``bbox_pred{i}`` per FPN level, exactly what
    ``bbox_head.forward`` returns; ``bbox_head.predict_by_feat`` decodes them (with NMS)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = self.detector.bbox_head(self.detector.extract_feat(images))
        return tuple(t for level_outputs in outs for t in level_outputs)

    def output_names(self, num_outputs: int) -> List[str]:
        levels = num_outputs // 2
        return [f'cls_score{i}' for i in range(levels)] + [f'bbox_pred{i}' for i in range(levels)]


class TwoStageDetectorGraph(nn.Module):
    """Two-stage detector up to its proposals' raw inputs: images -> the neck's maps ``feat{i}``
    (what the RoI heads pool from), then ``rpn_cls_score{i}``, ``rpn_bbox_pred{i}`` per level.
    ``rpn_head.predict_by_feat`` turns the RPN outputs into proposals, ``roi_head.predict`` runs the
    RoI heads on the features."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.detector.extract_feat(images)
        cls_scores, bbox_preds = self.detector.rpn_head(feats)
        return (*feats, *cls_scores, *bbox_preds)

    def output_names(self, num_outputs: int) -> List[str]:
        levels = num_outputs // 3
        return ([f'feat{i}' for i in range(levels)] + [f'rpn_cls_score{i}' for i in range(levels)]
                + [f'rpn_bbox_pred{i}' for i in range(levels)])


def model_graph(model: nn.Module) -> nn.Module:
    """The exportable network of a whole mmseg segmentor or mmdet detector; a clear error for
    any other model."""
    name = type(model).__name__
    try:
        from mmseg.models.segmentors import EncoderDecoder
        if isinstance(model, EncoderDecoder) and isinstance(model.decode_head, nn.Module) \
                and not isinstance(model.decode_head, nn.ModuleList):
            return SegmentorGraph(model)
    except ImportError:
        pass
    try:
        from mmdet.models.detectors import SingleStageDetector, TwoStageDetector
        if isinstance(model, TwoStageDetector) and getattr(model, 'rpn_head', None) is not None:
            return TwoStageDetectorGraph(model)
        # DETR-style detectors are not SingleStageDetector subclasses; their heads take data samples.
        if isinstance(model, SingleStageDetector):
            return DenseDetectorGraph(model)
    except ImportError:
        pass
    raise ValueError(f"--part model cannot export a {name}: expected an mmseg EncoderDecoder "
                     "(image -> logits), an mmdet single-stage detector (image -> raw head outputs) "
                     "or an mmdet two-stage detector with an RPN (image -> features + RPN outputs); "
                     "use --part backbone to export its backbone")


def graph_from_config(config: str, part: str = 'backbone', checkpoint: Optional[str] = None,
                      cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the network to export from a config file: ``part='backbone'`` (the config's
    ``model.backbone``, or ``model`` when the config describes a backbone alone) or ``'model'``
    (the whole segmentor / detector, see :func:`model_graph`). Weights come from ``checkpoint``
    (a detector/segmentor checkpoint or, for a backbone, any layout our loader reads); without
    one the weights are random, which is enough to check the graph. Every bad argument fails here,
    before anything is traced, with an error naming it."""
    if part not in PARTS:
        raise ValueError(f'unknown part {part!r}; expected one of {PARTS}')
    if not os.path.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope

    import mmvitattn  # noqa: F401  (registers our backbones, the safe checkpoint loader)
    try:
        cfg = Config.fromfile(config)
    except Exception as e:
        raise ValueError(f'cannot read config {config}: {type(e).__name__}: {e}') from e
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ValueError(f'config {config} has no "model" entry')
    init_default_scope(cfg.get('default_scope', 'mmvitattn'))
    model_cfg = cfg.model
    if part == 'backbone':
        model_cfg = model_cfg.get('backbone', model_cfg)
    model_cfg = dict(model_cfg)
    try:
        model = MODELS.build(model_cfg)
    except Exception as e:
        raise ValueError(f'cannot build the {part} of {config}: {type(e).__name__}: {e}') from e
    if part == 'model' and not any(k in model_cfg for k in ('backbone', 'decode_head', 'bbox_head')):
        raise ValueError(f'--part model: {config} describes a {type(model).__name__}, not a detector or '
                         'segmentor; use --part backbone')
    model = revert_sync_batchnorm(model).eval()
    if checkpoint is not None:
        load_weights(model, checkpoint, part)
    return BackboneGraph(model) if part == 'backbone' else model_graph(model)


def load_weights(model: nn.Module, checkpoint: str, part: str) -> None:
    """A backbone of ours loads through our pretrained loader (every layout it reads, ``backbone.``
    keys of a detector checkpoint included); anything else through mmengine (our safe loader)."""
    if part == 'backbone' and hasattr(model, 'load_pretrained'):
        model.load_pretrained(checkpoint)
        return
    from mmengine.runner import load_checkpoint
    prefix = [(r'^backbone\.', '')] if part == 'backbone' else [(r'^module\.', '')]
    load_checkpoint(model, checkpoint, map_location='cpu', strict=False, revise_keys=prefix)
