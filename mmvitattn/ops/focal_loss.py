"""Sigmoid focal loss with the semantics of mmcv's kernels (``mmcv._ext.sigmoid_focal_loss_forward``
/ ``_backward``; mmcv has them for CUDA only), in plain torch.

Per element (n, c) with p = sigmoid(x), t = target[n] (a class index; C means background):
loss = -alpha (1 - p)^gamma log(p) where t == c, else -(1 - alpha) p^gamma log(1 - p), both logs
clamped at the smallest normal float, times ``weight[t]`` when a per-class weight is given. The
backward writes d loss / dx, as mmcv's kernel does (its caller scales it by the incoming gradient).
"""
import torch
from torch import Tensor

_TINY = torch.finfo(torch.float32).tiny  # FLT_MIN, mmcv's clamp inside the logs


def _parts(input: Tensor, target: Tensor, weight: Tensor):
    x = input.float()
    p = torch.sigmoid(x)
    positive = target.view(-1, 1) == torch.arange(x.shape[1], device=x.device).view(1, -1)
    if weight.numel() == 0:
        class_weight = None
    else:
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= weight.numel()):
            raise ValueError(f'sigmoid_focal_loss with a per-class weight of {weight.numel()} classes needs '
                             f'targets in [0, {weight.numel()}), got values in '
                             f'[{int(target.min())}, {int(target.max())}]')
        class_weight = weight.float()[target].view(-1, 1)
    return p, positive, class_weight


def sigmoid_focal_loss_forward(input: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float,
                               alpha: float) -> None:
    p, positive, class_weight = _parts(input, target, weight)
    term_p = (1 - p).pow(gamma) * p.clamp(min=_TINY).log()
    term_n = p.pow(gamma) * (1 - p).clamp(min=_TINY).log()
    loss = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n)
    if class_weight is not None:
        loss = loss * class_weight
    output.copy_(loss)


def sigmoid_focal_loss_backward(input: Tensor, target: Tensor, weight: Tensor, grad_input: Tensor,
                                gamma: float, alpha: float) -> None:
    p, positive, class_weight = _parts(input, target, weight)
    term_p = (1 - p).pow(gamma) * (1 - p - gamma * p * p.clamp(min=_TINY).log())
    term_n = p.pow(gamma) * (gamma * (1 - p) * (1 - p).clamp(min=_TINY).log() - p)
    grad = torch.where(positive, -alpha * term_p, -(1 - alpha) * term_n)
    if class_weight is not None:
        grad = grad * class_weight
    grad_input.copy_(grad)
