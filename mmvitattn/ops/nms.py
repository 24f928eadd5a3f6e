"""Greedy NMS with the semantics of mmcv's CPU kernel (``mmcv._ext.nms``), on torchvision's kernel.

mmcv visits boxes in the order of ``scores.sort(descending=True)`` and drops a later box whose IoU
with a kept one is above the threshold; boxes are ``x2 - x1 + offset`` wide. torchvision's NMS has
no ``offset`` and sorts by itself, so: the same sort call fixes the order (ties included), the
kernel gets the boxes in that order with strictly decreasing stand-in scores, and ``offset=1`` is
moved into the boxes (x2 + 1, y2 + 1 give the same widths, intersections and areas).
mmdet's callers (``mmcv.ops.nms`` with a score threshold or ``max_num``, ``batched_nms`` with its
class offsets and its per-class split above ``split_thr`` boxes) are mmcv's Python around this one
function, so they need nothing else.
"""
import torch
from torch import Tensor


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int) -> Tensor:
    if offset not in (0, 1):
        raise ValueError(f'nms offset must be 0 or 1, got {offset!r}')
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    order = scores.sort(0, descending=True)[1]
    ordered = boxes[order].float()
    if offset:
        ordered = torch.cat([ordered[:, :2], ordered[:, 2:4] + 1], dim=1)
    rank = torch.arange(order.numel(), 0, -1, dtype=torch.float32, device=boxes.device)
    keep = torch.ops.torchvision.nms(ordered, rank, float(iou_threshold))
    return order[keep.sort()[0]]
