"""mmvitattn.ops: with the fallback forced, each replaced op equals mmcv's own CPU kernel (values and
gradients); the routing replaces nothing where mmcv has a kernel."""
import types

import pytest
import torch

import mmcv._ext
from mmcv.ops import batched_nms, nms, roi_align, sigmoid_focal_loss

from mmvitattn import ops
from mmvitattn.ops import forced_fallbacks

TOL = dict(rtol=1e-5, atol=1e-5)


def random_rois(n, image_hw, batch, generator, scale=1.0):
    """RoIs in image coordinates: small, large, partly outside the image, degenerate (x1 == x2)."""
    h, w = image_hw
    xy = torch.rand(n, 2, generator=generator) * torch.tensor([w, h]) * 1.2 - 0.1 * torch.tensor([w, h])
    wh = torch.rand(n, 2, generator=generator) ** 2 * torch.tensor([w, h]) * 0.8
    wh[::9] = 0.0  # degenerate RoIs
    idx = torch.randint(0, batch, (n, 1), generator=generator).float()
    return torch.cat([idx, xy, xy + wh], 1) / torch.tensor([1.0, scale, scale, scale, scale])


def roi_align_value_and_grad(feats, rois, output_size, scale, sampling_ratio, pool_mode, aligned, weight):
    x = feats.clone().requires_grad_(True)
    out = roi_align(x, rois, output_size, scale, sampling_ratio, pool_mode, aligned)
    (out * weight).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_roi_align_equals_mmcv_cpu_kernel(pool_mode, aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 23, 37, generator=g)  # non-square maps
    scale = 0.25  # a stride-4 level: image coordinates up to 4x the map
    rois = random_rois(120, (4 * 23, 4 * 37), 2, g)
    for output_size in [(7, 7), (3, 5)]:
        weight = torch.randn(rois.shape[0], 5, *output_size, generator=g)
        args = (feats, rois, output_size, scale, sampling_ratio, pool_mode, aligned, weight)
        ref_out, ref_grad = roi_align_value_and_grad(*args)
        with forced_fallbacks():
            out, grad = roi_align_value_and_grad(*args)
        assert ref_grad.abs().sum() > 0
        torch.testing.assert_close(out, ref_out, **TOL)
        torch.testing.assert_close(grad, ref_grad, **TOL)


def test_roi_align_adaptive_sampling_large_rois_and_empty():
    """sampling_ratio=0 gives large RoIs many samples per bin; an empty RoI list is fine."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 3, 40, 24, generator=g)
    rois = torch.tensor([[0, 0.0, 0.0, 23.0, 39.0], [0, 2.5, 3.5, 20.0, 11.0], [0, 5.0, 5.0, 5.0, 5.0]])
    for pool_mode in ('avg', 'max'):
        ref = roi_align(feats, rois, (2, 3), 1.0, 0, pool_mode, True)
        with forced_fallbacks():
            out = roi_align(feats, rois, (2, 3), 1.0, 0, pool_mode, True)
            empty = roi_align(feats, rois[:0], (2, 3), 1.0, 0, pool_mode, True)
        torch.testing.assert_close(out, ref, **TOL)
        assert empty.shape == (0, 3, 2, 3)


def boxes_with_ties(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 60
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=generator) * 30], 1)
    scores = torch.randint(0, 6, (n,), generator=generator).float() / 5  # many equal scores
    boxes[10:20] = boxes[0:10] + 0.5  # near duplicates
    scores[10:20] = scores[0:10]  # with tied scores
    return boxes, scores


@pytest.mark.parametrize('iou_threshold', [0.3, 0.5, 0.7])
def test_nms_equals_mmcv_cpu_kernel_with_ties(iou_threshold):
    g = torch.Generator().manual_seed(2)
    boxes, scores = boxes_with_ties(300, g)
    for kwargs in (dict(), dict(score_threshold=0.35), dict(max_num=17), dict(offset=1)):
        ref_dets, ref_keep = nms(boxes, scores, iou_threshold, **kwargs)
        with forced_fallbacks():
            dets, keep = nms(boxes, scores, iou_threshold, **kwargs)
        assert 0 < len(ref_keep) < len(boxes)
        assert torch.equal(keep, ref_keep), kwargs
        torch.testing.assert_close(dets, ref_dets, rtol=0, atol=0)
    with forced_fallbacks():
        dets, keep = nms(boxes[:0], scores[:0], iou_threshold)
    assert keep.shape == (0,) and dets.shape == (0, 5)


@pytest.mark.parametrize('nms_cfg', [dict(type='nms', iou_threshold=0.5),
                                     dict(type='nms', iou_threshold=0.6, class_agnostic=True),
                                     dict(type='nms', iou_threshold=0.5, split_thr=50, max_num=40)])
def test_batched_nms_across_classes_equals_mmcv(nms_cfg):
    g = torch.Generator().manual_seed(3)
    boxes, scores = boxes_with_ties(400, g)
    labels = torch.randint(0, 7, (400,), generator=g)
    ref_dets, ref_keep = batched_nms(boxes, scores, labels, nms_cfg)
    with forced_fallbacks():
        dets, keep = batched_nms(boxes, scores, labels, nms_cfg)
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(dets, ref_dets, rtol=0, atol=0)
    assert len(set(labels[keep].tolist())) > 1


def focal_loss_reference(x, target, gamma, alpha, weight=None):
    """The sigmoid focal loss of Lin et al. (2017), per element, in float64 from its definition."""
    x = x.double()
    p = torch.sigmoid(x)
    onehot = torch.nn.functional.one_hot(target, x.shape[1] + 1)[:, :x.shape[1]].double()
    loss = (-alpha * onehot * (1 - p) ** gamma * torch.log(p)
            - (1 - alpha) * (1 - onehot) * p ** gamma * torch.log(1 - p))
    if weight is not None:
        loss = loss * weight.double()[target].view(-1, 1)
    return loss


@pytest.mark.parametrize('gamma, alpha', [(2.0, 0.25), (1.5, 0.6), (0.0, 0.5)])
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_sigmoid_focal_loss_matches_its_definition(gamma, alpha, reduction):
    """mmcv has CUDA kernels only for this op (its CPU call raises), so the fallback is checked
    against the loss written out, values and autograd gradients (float64), with class weights."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 5, generator=g) * 3
    target = torch.randint(0, 6, (64,), generator=g)  # 5 = background
    for weight in (None, torch.rand(5, generator=g) + 0.5):
        if weight is not None:
            target = target.clamp(max=4)  # mmcv indexes the class weight by the target
        xr = x.double().requires_grad_(True)
        ref = focal_loss_reference(xr, target, gamma, alpha, weight)
        ref = {'none': ref, 'mean': ref.sum() / x.shape[0], 'sum': ref.sum()}[reduction]
        upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        (ref * upstream).sum().backward()
        xf = x.clone().requires_grad_(True)
        with forced_fallbacks():
            out = sigmoid_focal_loss(xf, target, gamma, alpha, weight, reduction)
            (out * upstream.float()).sum().backward()
        torch.testing.assert_close(out.double(), ref.detach(), **TOL)
        torch.testing.assert_close(xf.grad.double(), xr.grad, **TOL)


def test_focal_loss_weight_needs_foreground_targets():
    x, target = torch.zeros(3, 4), torch.tensor([0, 4, 1])
    with forced_fallbacks(), pytest.raises(ValueError, match=r'targets in \[0, 4\), got values in \[0, 4\]'):
        sigmoid_focal_loss(x, target, 2.0, 0.25, torch.ones(4), 'none')


def test_mmcv_cpu_build_has_no_focal_loss_kernel():
    """Why the focal loss is compared with its definition: mmcv's own CPU call fails."""
    if ops.ALL_DEVICES in ops.routed_devices():
        pytest.skip(f'{ops.FORCE_ENV} is set in this environment')
    with pytest.raises(RuntimeError, match='not found'):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), 2.0, 0.25, None, 'mean')


# ------------------------------------------------------------------------------------------ routing
def mmcv_kernel(fn):
    """mmcv's own function behind a routing wrapper (itself when not wrapped)."""
    return getattr(fn, '__wrapped__', fn)


@pytest.fixture
def restore_routing(monkeypatch):
    """Tests that re-decide the routing give the session's back (on a GPU machine: CUDA routed)."""
    yield
    monkeypatch.undo()
    ops.install_fallbacks()


def test_without_the_switch_nothing_is_replaced_on_cpu():
    if ops.force_requested() or torch.cuda.is_available():
        pytest.skip(f'{ops.FORCE_ENV} is set or a GPU is visible')
    assert ops.routed_devices() == frozenset()
    for name in ops.FALLBACK_OPS:
        assert isinstance(getattr(mmcv._ext, name), types.BuiltinFunctionType), name  # mmcv's own


def test_forcing_replaces_every_op_and_restores_them():
    before = ops.routed_devices()
    kernels = {name: mmcv_kernel(getattr(mmcv._ext, name)) for name in ops.FALLBACK_OPS}
    with forced_fallbacks():
        assert ops.routed_devices() == frozenset({ops.ALL_DEVICES})
        assert all(getattr(mmcv._ext, name) is not kernel for name, kernel in kernels.items())
    assert ops.routed_devices() == before
    assert all(mmcv_kernel(getattr(mmcv._ext, name)) is kernel for name, kernel in kernels.items())


def test_switch_from_the_environment(monkeypatch, restore_routing):
    monkeypatch.setenv(ops.FORCE_ENV, '1')
    try:
        assert ops.install_fallbacks() == frozenset({ops.ALL_DEVICES})
    finally:
        ops.uninstall_fallbacks()
    monkeypatch.setenv(ops.FORCE_ENV, 'yes')
    with pytest.raises(ValueError, match=r"MMVITATTN_FORCE_OP_FALLBACK must be 1 .* got 'yes'"):
        ops.install_fallbacks()
    assert ops.routed_devices() == frozenset()


class FakeTensor:
    def __init__(self, device_type):
        self.device = types.SimpleNamespace(type=device_type)


@pytest.mark.parametrize('cuda_visible, mmcv_cuda, routed', [(True, False, {'cuda'}), (True, True, set()),
                                                             (False, False, set())])
def test_only_devices_without_an_mmcv_kernel_are_routed(monkeypatch, restore_routing, cuda_visible, mmcv_cuda,
                                                        routed):
    """A GPU machine with mmcv's CPU build: CUDA tensors go to the fallback, CPU tensors to mmcv."""
    monkeypatch.delenv(ops.FORCE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda_visible)
    monkeypatch.setattr(ops, 'mmcv_has_cuda_ops', lambda: mmcv_cuda)
    mmcv_nms = mmcv_kernel(mmcv._ext.nms)
    calls = []
    monkeypatch.setitem(ops.FALLBACK_OPS, 'nms', lambda *a, **k: calls.append('fallback') or 'fallback')
    try:
        assert ops.install_fallbacks() == routed
        if routed:
            assert mmcv._ext.nms(FakeTensor('cuda'), None, iou_threshold=0.5, offset=0) == 'fallback'
        boxes, scores = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2.1]]), torch.tensor([0.9, 0.8])
        assert mmcv._ext.nms(boxes, scores, iou_threshold=0.5, offset=0).tolist() == [0]  # mmcv's kernel
        assert calls == (['fallback'] if routed else [])
    finally:
        ops.uninstall_fallbacks()
    assert mmcv._ext.nms is mmcv_nms


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
def test_roi_align_mixed_precision_inputs(dtype, pool_mode):
    """Under autocast the RoI extractor gets half-precision features and RoIs; the fallback computes
    in float32 (torchvision has no bfloat16 kernel) and returns the input's dtype."""
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 4, 16, 24, generator=g).to(dtype)
    rois = random_rois(30, (64, 96), 2, g).to(dtype)
    weight = torch.randn(30, 4, 7, 7, generator=g)
    ref_out, ref_grad = roi_align_value_and_grad(feats.float(), rois.float(), (7, 7), 0.25, 0, pool_mode, True,
                                                 weight)
    with forced_fallbacks():
        out, grad = roi_align_value_and_grad(feats, rois, (7, 7), 0.25, 0, pool_mode, True, weight.to(dtype))
    assert out.dtype == grad.dtype == dtype
    torch.testing.assert_close(out.float(), ref_out, rtol=1e-2, atol=1e-2)
    if pool_mode == 'avg':  # the max mode keeps its maxima's sample points in the input's dtype, as mmcv
        torch.testing.assert_close(grad.float(), ref_grad, rtol=1e-2, atol=2e-2)


# ------------------------------------------------------------------ on a GPU (tools/check_gpu.sh runs these)
needs_routed_cuda = pytest.mark.skipif(not torch.cuda.is_available() or ops.mmcv_has_cuda_ops(),
                                       reason='needs a GPU and mmcv built without CUDA')


@needs_routed_cuda
@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_cuda_roi_align_equals_mmcv_cpu_kernel(pool_mode, aligned, sampling_ratio):
    assert 'cuda' in ops.routed_devices()
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 23, 37, generator=g)
    rois = random_rois(120, (4 * 23, 4 * 37), 2, g)
    weight = torch.randn(120, 5, 7, 7, generator=g)
    ref_out, ref_grad = roi_align_value_and_grad(feats, rois, (7, 7), 0.25, sampling_ratio, pool_mode, aligned, weight)
    out, grad = roi_align_value_and_grad(feats.cuda(), rois.cuda(), (7, 7), 0.25, sampling_ratio, pool_mode, aligned,
                                         weight.cuda())
    torch.testing.assert_close(out.cpu(), ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-4, atol=1e-5)  # atomic adds: any order


@needs_routed_cuda
def test_cuda_nms_and_batched_nms_equal_mmcv_cpu_kernel():
    g = torch.Generator().manual_seed(6)
    boxes, _ = boxes_with_ties(400, g)
    scores = torch.randperm(400, generator=g).float() / 400  # no ties: CUDA's sort orders ties its own way
    labels = torch.randint(0, 7, (400,), generator=g)
    for thr in (0.3, 0.5, 0.7):
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), thr)[1].cpu(), nms(boxes, scores, thr)[1])
    cfg = dict(type='nms', iou_threshold=0.5, split_thr=50, max_num=40)
    assert torch.equal(batched_nms(boxes.cuda(), scores.cuda(), labels.cuda(), cfg)[1].cpu(),
                       batched_nms(boxes, scores, labels, cfg)[1])


@needs_routed_cuda
def test_cuda_sigmoid_focal_loss_matches_its_definition():
    g = torch.Generator().manual_seed(7)
    x, target = torch.randn(64, 5, generator=g) * 3, torch.randint(0, 6, (64,), generator=g)
    xr = x.double().requires_grad_(True)
    focal_loss_reference(xr, target, 2.0, 0.25).sum().backward()
    xc = x.cuda().requires_grad_(True)
    out = sigmoid_focal_loss(xc, target.cuda(), 2.0, 0.25, None, 'none')
    out.sum().backward()
    torch.testing.assert_close(out.cpu().double(), focal_loss_reference(x, target, 2.0, 0.25), **TOL)
    torch.testing.assert_close(xc.grad.cpu().double(), xr.grad, **TOL)
