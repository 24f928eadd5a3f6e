"""FLOP counting that treats every attention mechanism by the same rules.

Built on mmengine's tracing counter (:class:`mmengine.analysis.FlopAnalyzer`). Out of the box that
counter only knows products (linear, matmul, conv, ...) and norms: ``scaled_dot_product_attention``
and the element-wise work of linear attention (means, L2 normalisations, softmax) are reported as
"unsupported" and silently left out, which makes softmax attention look free and hides part of
every other mechanism. :func:`attention_op_handles` adds handles for all of them.

Counting rules (one unit = one multiply-add, mmengine's and the papers' convention):

- products (linear, matmul, bmm, conv, einsum): one per multiply-add, bias not counted;
- ``scaled_dot_product_attention(q, k, v)``: its two products, ``B h Nq Nk d`` for the logits and
  ``B h Nq Nk dv`` for the weighted sum, plus the softmax over the ``B h Nq Nk`` logits (below) and
  one per logit for an additive/boolean mask;
- element-wise ops (add, mul, div, GELU, clamp_min, exp, rsqrt, ...): one per output element;
- reductions (sum, mean, vector norms): one per input element;
- softmax: ``SOFTMAX_PER_ELEMENT`` = 5 per element (max, subtract, exp, sum, divide: the same rules
  applied to its parts), whether written out or inside SDPA;
- LayerNorm/GroupNorm/BatchNorm: mmengine's rules (5 per element with an affine, 4 without).

``elementwise=False`` keeps only the products (and SDPA's products), which is what most papers
report; the default counts everything so no mechanism is flattered by the rules.
"""
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import bmm_flop_jit, get_shape
from torch import nn

SOFTMAX_PER_ELEMENT = 5

# Named input sizes, (height, width): ImageNet, COCO detection (1280 wide, 800 high) and ADE20K
# (the 512 x 2048 whole-image test size).
STANDARD_SIZES: Dict[str, Tuple[int, int]] = {
    'imagenet': (224, 224),
    'coco': (800, 1280),
    'ade20k': (512, 2048),
}

_ELEMENTWISE_OPS = (
    'add', 'add_', 'sub', 'sub_', 'rsub', 'mul', 'mul_', 'div', 'div_', 'neg', 'exp', 'sqrt',
    'rsqrt', 'reciprocal', 'pow', 'square', 'clamp_min', 'clamp_min_', 'gelu', 'silu', 'sigmoid',
    'tanh', 'hardswish', 'hardswish_', 'hardsigmoid', 'abs', 'sign', 'erf', 'addcmul', 'addcmul_', 'addcdiv',
    'addcdiv_',
    'lerp', 'where', 'log', 'log2', 'sin', 'cos', 'acos', 'reciprocal_', 'gelu_', 'exp_', 'sqrt_')
_REDUCTION_OPS = ('sum', 'mean', 'linalg_vector_norm', 'norm', 'frobenius_norm', 'amax', 'var',
                  'std', 'logsumexp')
# Shape and bookkeeping ops that do no arithmetic (in addition to mmengine's own list).
_FREE_OPS = ('expand_as', 'new_ones', 'clone', 'repeat', 'unflatten', 'view_as', 'movedim',
             'lift_fresh', 'scalar_tensor', 'numel', 'masked_fill_', 'fill_', 'zero_', 'resolve_conj',
             'resolve_neg', 'alias', '__or__', '__ior__', '__iand__', 'bitwise_or', 'bitwise_and', 'as_strided', 'ne', 'lt', 'le', 'logical_not', 'logical_and',
             'any', 'all', 'argmax', 'topk', 'sort', 'index_select', 'pad', 'tensor_split', 'flip',
             'meshgrid', 'linspace', 'empty_like', 'ones_like', 'unbind', 'broadcast_tensors',
             'contiguous', 'detach_', 'dim', 'stack', 'repeat_interleave', 'unfold', 'tile')


def _numel(shape: Optional[List[int]]) -> int:
    return math.prod(shape) if shape else 0


def _output_elements(inputs: List[Any], outputs: List[Any]) -> int:
    return _numel(get_shape(outputs[0]))


def _input_elements(inputs: List[Any], outputs: List[Any]) -> int:
    return _numel(get_shape(inputs[0]))


def _softmax_flops(inputs: List[Any], outputs: List[Any]) -> int:
    return SOFTMAX_PER_ELEMENT * _numel(get_shape(inputs[0]))


def sdpa_flop_count(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int],
                    with_mask: bool = False, elementwise: bool = True) -> int:
    """FLOPs of ``scaled_dot_product_attention`` for q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv)."""
    *batch, nq, d = q_shape
    nk, dv = k_shape[-2], v_shape[-1]
    logits = math.prod(batch) * nq * nk
    flops = logits * d + logits * dv
    if elementwise:
        flops += SOFTMAX_PER_ELEMENT * logits + (logits if with_mask else 0)
    return flops


def _sdpa_handle(elementwise: bool):

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        q, k, v = (get_shape(t) for t in inputs[:3])
        # The 4th argument is attn_mask; the traced graph holds None as a constant without a shape.
        mask = len(inputs) > 3 and get_shape(inputs[3]) is not None
        return sdpa_flop_count(q, k, v, with_mask=mask, elementwise=elementwise)

    return handle


def _baddbmm_handle(elementwise: bool):

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        flops = bmm_flop_jit(inputs[1:3], outputs)
        return flops + (_output_elements(inputs, outputs) if elementwise else 0)

    return handle


def _roi_align_handle(inputs: List[Any], outputs: List[Any]) -> int:
    # Bilinear interpolation: 4 multiply-adds per sampled output value (one sample per bin).
    return 4 * _output_elements(inputs, outputs)


def attention_op_handles(elementwise: bool = True) -> Dict[str, Any]:
    """Op name -> handle (or None = free) for everything our token mixers and backbones run,
    on top of mmengine's defaults (see the module docstring for the rules)."""
    handles: Dict[str, Any] = {
        'aten::scaled_dot_product_attention': _sdpa_handle(elementwise),
        'aten::baddbmm': _baddbmm_handle(elementwise),
        'aten::baddbmm_': _baddbmm_handle(elementwise),
    }
    for op in _FREE_OPS:
        handles[f'aten::{op}'] = None
    for op in _ELEMENTWISE_OPS:
        handles[f'aten::{op}'] = _output_elements if elementwise else None
    for op in _REDUCTION_OPS:
        handles[f'aten::{op}'] = _input_elements if elementwise else None
    for op in ('softmax', '_softmax', 'log_softmax'):
        handles[f'aten::{op}'] = _softmax_flops if elementwise else None
    for op in ('max_pool2d', 'avg_pool2d', 'adaptive_max_pool2d'):
        handles[f'aten::{op}'] = _input_elements if elementwise else None
    for op in ('upsample_bicubic2d', '_upsample_bicubic2d_aa', '_upsample_bilinear2d_aa'):
        handles[f'aten::{op}'] = (lambda i, o: 16 * _output_elements(i, o)) if elementwise else None
    handles['prim::PythonOp.RoIAlignFunction'] = _roi_align_handle
    # Dropout/DropPath are identities at inference.
    handles['aten::dropout_'] = None
    handles['aten::bernoulli_'] = None
    return handles


def flop_analyzer(model: nn.Module, inputs: Union[torch.Tensor, Tuple[Any, ...]],
                  elementwise: bool = True) -> FlopAnalyzer:
    """An mmengine :class:`FlopAnalyzer` with :func:`attention_op_handles` installed."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**attention_op_handles(elementwise))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


@dataclass
class FlopCount:
    """The result of one count: ``total`` FLOPs, per operator, per module, and what was not counted."""
    total: int
    by_operator: Dict[str, int]
    by_module: Dict[str, int]
    unsupported: Dict[str, int] = field(default_factory=dict)
    params: int = 0

    def as_dict(self) -> dict:
        return dict(total=self.total, params=self.params, by_operator=self.by_operator,
                    unsupported=self.unsupported)


def count_flops(model: nn.Module, inputs: Union[torch.Tensor, Tuple[Any, ...]],
                elementwise: bool = True) -> FlopCount:
    """Count one forward of ``model(*inputs)`` (in eval mode, without gradients)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analyzer = flop_analyzer(model, inputs, elementwise)
            total = int(analyzer.total())
            by_op = {k: int(v) for k, v in analyzer.by_operator().items()}
            by_module = {k: int(v) for k, v in analyzer.by_module().items()}
            unsupported = dict(analyzer.unsupported_ops())
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return FlopCount(total, by_op, by_module, unsupported, params)


def parse_size(text: Union[str, int, Sequence[int]]) -> Tuple[int, int]:
    """'224' -> (224, 224); '800x1280' -> (800, 1280) (height x width); a name from
    ``STANDARD_SIZES`` ('imagenet', 'coco', 'ade20k'); an int or an (h, w) pair."""
    if isinstance(text, int):
        size = (text, text)
    elif isinstance(text, (tuple, list)):
        size = tuple(text)
    elif isinstance(text, str):
        key = text.strip().lower()
        if key in STANDARD_SIZES:
            return STANDARD_SIZES[key]
        parts = key.split('x')
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise ValueError(f'bad input size {text!r}; expected "S" (square), "HxW" (height x width, '
                             f'e.g. "800x1280") or one of {sorted(STANDARD_SIZES)}')
        size = (int(parts[0]), int(parts[-1]))
    else:
        raise ValueError(f'bad input size {text!r}; expected a string, an int or an (h, w) pair')
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f'bad input size {text!r}; expected two positive ints (height, width)')
    return size


def backbone_flops(backbone: nn.Module, size: Union[str, int, Sequence[int]], in_channels: int = 3,
                   elementwise: bool = True) -> FlopCount:
    """FLOPs of a backbone's forward on one ``size`` image (batch 1)."""
    h, w = parse_size(size)
    device = next(backbone.parameters()).device
    return count_flops(backbone, torch.zeros(1, in_channels, h, w, device=device), elementwise)


class _TwoStageTensorForward(nn.Module):
    """Backbone + neck + RPN head convs + RoI heads of a two-stage detector, on a fixed set of
    ``num_proposals`` boxes, so the count does not depend on what NMS keeps from random weights."""

    def __init__(self, detector: nn.Module, size: Tuple[int, int], num_proposals: int):
        super().__init__()
        self.detector = detector
        h, w = size
        gen = torch.Generator().manual_seed(0)
        xy = torch.rand(num_proposals, 2, generator=gen) * torch.tensor([w * 0.75, h * 0.75])
        wh = torch.rand(num_proposals, 2, generator=gen) * torch.tensor([w * 0.25, h * 0.25]) + 8
        self.register_buffer('boxes', torch.cat([xy, xy + wh], dim=1), persistent=False)

    def forward(self, x):
        from mmdet.structures.bbox import bbox2roi
        det = self.detector
        feats = det.extract_feat(x)
        outs = (det.rpn_head(feats), )
        rois = bbox2roi([self.boxes.to(x.dtype)])
        roi = det.roi_head
        # Cascade heads run every stage (on the same boxes here; mmdet refines them in between).
        stages = [(stage, ) for stage in range(roi.num_stages)] if hasattr(roi, 'num_stages') else [()]
        for stage in stages:
            if roi.with_bbox:
                res = roi._bbox_forward(*stage, feats, rois)
                outs += (res['cls_score'], res['bbox_pred'])
            if roi.with_mask:
                outs += (roi._mask_forward(*stage, feats, rois[:100])['mask_preds'], )  # as mmdet's forward
        return outs


class _TensorForward(nn.Module):
    """A model's ``_forward`` (features and head outputs, no post-processing) on one image."""

    def __init__(self, model: nn.Module, size: Tuple[int, int]):
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, x):
        h, w = self.size
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                    scale_factor=(1.0, 1.0))
        try:
            from mmdet.structures import DetDataSample
            sample = DetDataSample(metainfo=meta)
        except ImportError:  # segmentation-only installs
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
        return self.model._forward(x, [sample])


def tensor_forward(model: nn.Module, size: Union[str, int, Sequence[int]], num_proposals: int = 1000) -> nn.Module:
    """A module whose ``forward(images)`` runs ``model`` (mmdet/mmseg) without post-processing on
    batch-1 images of ``size``: backbone, neck and heads; a two-stage detector's RoI heads on
    ``num_proposals`` fixed boxes (and its mask head on the first 100), so the work does not depend
    on what NMS keeps from random weights."""
    h, w = parse_size(size)
    if hasattr(model, 'rpn_head') and hasattr(model, 'roi_head'):
        return _TwoStageTensorForward(model, (h, w), num_proposals).to(next(model.parameters()).device)
    return _TensorForward(model, (h, w))


def model_flops(model: nn.Module, size: Union[str, int, Sequence[int]], num_proposals: int = 1000,
                elementwise: bool = True) -> Dict[str, FlopCount]:
    """Backbone-only and full-model FLOPs of an mmdet/mmseg model at ``size`` (batch 1).

    Full model = backbone, neck and heads without post-processing (mmdet's ``mode='tensor'``);
    for two-stage detectors the RoI heads run on ``num_proposals`` fixed boxes (the usual
    test-time RPN output count) and the mask head on the first 100, as mmdet's own forward does.
    Returns ``{'backbone': ..., 'model': ...}``.
    """
    h, w = parse_size(size)
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, h, w, device=device)
    result = {'backbone': count_flops(model.backbone, x, elementwise)}
    full = count_flops(tensor_forward(model, (h, w), num_proposals), x, elementwise)
    # Module names without the wrapper's prefix.
    full.by_module = {k.split('.', 1)[1] if '.' in k else '': v for k, v in full.by_module.items()}
    result['model'] = full
    return result


def format_flops(flops: Union[int, float]) -> str:
    return f'{flops / 1e9:.2f}G'


__all__ = [
    'SOFTMAX_PER_ELEMENT', 'STANDARD_SIZES', 'FlopCount', 'attention_op_handles', 'backbone_flops',
    'count_flops', 'flop_analyzer', 'format_flops', 'model_flops', 'parse_size', 'sdpa_flop_count',
    'tensor_forward'
]
