"""With the fallback ops forced, a training step and a prediction of a Mask R-CNN, a RetinaNet and a
Cascade Mask R-CNN config give the losses and detections of mmcv's CPU kernels."""
import copy
from pathlib import Path

import pytest
import torch

from mmvitattn.ops import forced_fallbacks, record_ext_calls, routed_devices
from mmvitattn.testing import (build_model, focal_loss_on_mmcv_op, keep_detections, step_setup,
                               train_step_and_predict)

REPO = Path(__file__).resolve().parents[2]
TOL = dict(rtol=1e-5, atol=1e-5)
CASES = {
    'mask_rcnn': ('configs/mask_rcnn/mask-rcnn_inline-pvt-t_fpn_1x_coco.py', {'roi_align_forward', 'nms'}),
    'retinanet': ('configs/retinanet/retinanet_inline-pvt-t_fpn_1x_coco.py', {'sigmoid_focal_loss_forward', 'nms'}),
    'cascade': ('configs/cascade_rcnn/cascade-mask-rcnn_inline-swin-t_fpn_1x_coco.py', {'roi_align_backward'}),
}


def run(model, cfg, data):
    log_vars, predictions = train_step_and_predict(model, cfg, data)
    return log_vars, [p.pred_instances for p in predictions]


@pytest.mark.parametrize('case', sorted(CASES))
def test_step_and_prediction_equal_with_forced_fallback(case):
    path, ops_reached = CASES[case]
    cfg, data, registry = step_setup(str(REPO / path))
    keep_detections(cfg.model)
    model = build_model(cfg, registry)
    twin = copy.deepcopy(model)

    routing = routed_devices()  # nothing on CPU; CUDA on a GPU machine (these tensors are on the CPU)
    ref_losses, ref_dets = run(model, cfg, data)
    # RetinaNet's FocalLoss calls mmcv's compiled op only for CUDA tensors: take that branch here.
    with forced_fallbacks(), focal_loss_on_mmcv_op(), record_ext_calls() as calls:
        losses, dets = run(twin, cfg, data)
    assert routed_devices() == routing  # restored
    assert ops_reached <= set(calls), sorted(calls)

    assert set(losses) == set(ref_losses)
    for key, value in ref_losses.items():
        torch.testing.assert_close(losses[key], value, **TOL, msg=key)
    for got, ref in zip(dets, ref_dets):
        assert len(ref.bboxes) > 0
        for key in ('bboxes', 'scores', 'labels', 'masks'):
            if key in ref:
                torch.testing.assert_close(got[key].float(), ref[key].float(), **TOL, msg=key)
