"""ONNX export: onnxruntime equals PyTorch at sizes that were not traced (non-square included),
linear-attention graphs hold no N x N tensor, and bad inputs fail before any file is written."""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from mmvitattn.deployment import (BackboneGraph, ExportCheckError, export_onnx, graph_from_config,  # noqa: E402
                                  onnxruntime_session, token_square_values)
from mmvitattn.registry import MODELS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SLOW = pytest.mark.skipif(os.environ.get('MMVITATTN_SLOW') != '1', reason='slow: set MMVITATTN_SLOW=1')

TRACED = (67, 99)  # a multiple of no stride or window: every padding step is traced
CHECKS = [(64, 64), (96, 160), (75, 45)]
UNTRACED = (80, 112)  # checked by the tests themselves, not by the exporter

PVT_TINY = dict(arch=None, depths=(1, 1, 1, 1), embed_dims=(16, 16, 32, 32), num_heads=(2, 2, 2, 2),
                mlp_ratios=(2, 2, 2, 2))
VIT_TINY = dict(arch=None, embed_dim=32, depth=2, num_heads=2, pretrain_img_size=64)
SWIN_TINY = dict(arch=None, embed_dims=16, num_heads=(2, 2, 2, 2), window_size=3)
CSWIN_TINY = dict(arch=None, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))
LEVIT_TINY = dict(arch=None, embed_dims=(32, 48, 64), key_dim=8, num_heads=(2, 3, 4), depths=(1, 1, 1))
FAST = {
    'pvt-inline': dict(type='mmvitattn.PVT', attention='inline', **PVT_TINY),
    'vit-castling': dict(type='mmvitattn.ViT', attention='castling', **VIT_TINY),
}
# Every family with every mixer it takes (slow: one export each).
FAMILIES = {
    'pvt-castling': dict(type='mmvitattn.PVT', attention='castling', **PVT_TINY),
    'pvt-sra': dict(type='mmvitattn.PVT', attention='sra', sr_ratios=(4, 2, 2, 1), **PVT_TINY),
    'pvt-armour': dict(type='mmvitattn.PVT', attention='armour', **PVT_TINY),
    'pvtv2-inline': dict(type='mmvitattn.PVTv2', attention='inline', **PVT_TINY),
    'vit-inline-pyramid': dict(type='mmvitattn.ViT', attention='inline', out_type='simple_pyramid', out_channels=24,
                               **VIT_TINY),
    'vit-softmax': dict(type='mmvitattn.ViT', attention='softmax', **VIT_TINY),
    'vit-armour': dict(type='mmvitattn.ViT', attention='armour', **VIT_TINY),
    'swin-window-inline-castling-armour': dict(type='mmvitattn.Swin', depths=(2, 1, 1, 1),
                                               attention=('S', 'I', 'C', 'A'), **SWIN_TINY),
    'swin-inline': dict(type='mmvitattn.Swin', depths=(1, 1, 1, 1), attention='I', **SWIN_TINY),
    'cswin-inline-stripes': dict(type='mmvitattn.CSwin', attention=('inline', 'inline', 'cswin', 'cswin'),
                                 split_sizes=(1, 2, 2, None), **CSWIN_TINY),
    'cswin-castling-armour': dict(type='mmvitattn.CSwin', attention=('castling', 'armour', 'cswin', 'cswin'),
                                  split_sizes=(1, 2, 2, None), **CSWIN_TINY),
    'levit-softmax': dict(type='mmvitattn.LeViT', attention='softmax', **LEVIT_TINY),
    'levit-armour': dict(type='mmvitattn.LeViT', attention='armour', **LEVIT_TINY),
}


def ort_matches_torch(graph, path, size, batch=1):
    """Our own comparison at a size the exporter did not check: max |onnx - torch| (outputs are O(1))."""
    images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        refs = graph(images)
    refs = (refs, ) if isinstance(refs, torch.Tensor) else refs
    outs = onnxruntime_session(str(path)).run(None, {'images': images.numpy()})
    assert [o.shape for o in outs] == [tuple(r.shape) for r in refs]
    return max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, refs))


def check_backbone_export(cfg, tmp_path, linear, dynamic_batch=True):
    torch.manual_seed(0)
    graph = BackboneGraph(MODELS.build(dict(cfg)))
    path = tmp_path / 'backbone.onnx'
    result = export_onnx(graph, str(path), shape=TRACED, check_sizes=CHECKS, dynamic_batch=dynamic_batch)
    assert path.exists() and [c.ok for c in result.checks] == [True] * 3
    assert ort_matches_torch(graph, path, UNTRACED) <= 1e-4
    if linear:
        assert result.linear_only and result.square_values == []
    import onnx
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != '' for d in dims[2:]] == [True, True]  # height and width symbolic
    return graph, path, result


def test_inline_backbone_exports_with_dynamic_batch(tmp_path):
    # InLine's per-image residual kernels (a B x C grouped conv in PyTorch) keep the batch dynamic.
    graph, path, result = check_backbone_export(FAST['pvt-inline'], tmp_path, linear=True)
    assert result.dynamic_batch
    assert ort_matches_torch(graph, path, UNTRACED, batch=2) <= 1e-4


def test_castling_backbone_exports_with_dynamic_batch(tmp_path):
    graph, path, result = check_backbone_export(FAST['vit-castling'], tmp_path, linear=True)
    assert result.dynamic_batch
    assert ort_matches_torch(graph, path, UNTRACED, batch=3) <= 1e-4



@SLOW
@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_every_family_and_mixer_exports(name, tmp_path):
    linear = any(a in name for a in ('inline', 'castling')) and not any(
        a in name for a in ('sra', 'softmax', 'window', 'stripes', 'armour'))
    check_backbone_export(FAMILIES[name], tmp_path, linear=linear)


def test_square_value_search_finds_softmax_attention(tmp_path):
    """The N x N search is not vacuous: a global-softmax ViT's graph has (B, h, N, N) values, and
    they are found with both token axes; the same trunk with InLine has none."""
    torch.manual_seed(0)
    graph = BackboneGraph(MODELS.build(dict(type='mmvitattn.ViT', attention='softmax', **VIT_TINY)))
    result = export_onnx(graph, str(tmp_path / 'softmax.onnx'), shape=TRACED, check_sizes=CHECKS)
    assert not result.linear_only
    tokens = [1 + (64 // 16) * (64 // 16), 1 + (96 // 16) * (160 // 16)]  # cls + grid, at CHECKS[0], CHECKS[1]
    square = [(a, b) for _, a, b in result.square_values if a[-2:] == (tokens[0], ) * 2]
    assert square and all(b[-2:] == (tokens[1], ) * 2 for _, b in square)
    assert token_square_values(str(tmp_path / 'softmax.onnx'), CHECKS[0], CHECKS[1]) == result.square_values


class TinyNet(torch.nn.Module):
    """A conv, cheap to export; ``bake_size=True`` multiplies by the pixel count as a Python float, which
    the exporter freezes at the traced size (the kind of bug the check is there to catch)."""

    def __init__(self, bake_size=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bake_size = bake_size

    def forward(self, images):
        out = self.conv(images)
        return (out * float(images.shape[-2] * images.shape[-1]) if self.bake_size else out, )

    def output_names(self, num_outputs):
        return ['feat0']


class OneMixer(torch.nn.Module):
    """A stride-4 conv and one token mixer: a cheap graph with a mixer's size-dependent steps."""

    def __init__(self, name, **kwargs):
        super().__init__()
        from mmvitattn.attention import build_attention
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.mixer = build_attention(name, 8, 2, **kwargs).eval()

    def forward(self, images):
        x = self.embed(images)
        b, c, h, w = x.shape
        return (self.mixer(x.flatten(2).transpose(1, 2), (h, w)).transpose(1, 2).reshape(b, c, h, w), )

    def output_names(self, num_outputs):
        return ['feat0']


@SLOW  # torch.export takes about a minute even for this (CSwin and LeViT backbones: the family test)
@pytest.mark.parametrize('name, kwargs', [
    ('cswin', dict(split_size=2)),  # stripes padded (centred) on some maps and not on others
    ('levit', dict(resolution=(4, 4))),  # the trained bias table resized to each run-time grid
])
def test_size_dependent_mixers_export_at_untraced_sizes(name, kwargs, tmp_path):
    """Traced on a 5x7 map, run on 5x3 (CSWin: windows counted by a ceiling division, which must
    not become ONNX's truncating one) and 6x10 (LeViT: the bias grid's length must not be frozen)."""
    graph = OneMixer(name, **kwargs)
    path = tmp_path / 'mixer.onnx'
    result = export_onnx(graph, str(path), shape=(20, 28), check_sizes=[(20, 12), (24, 40)], dynamic_batch=False)
    assert all(c.ok for c in result.checks)
    assert ort_matches_torch(graph, path, (28, 20)) <= 1e-4


def test_failed_check_leaves_no_file(tmp_path):
    path = tmp_path / 'out.onnx'
    with pytest.raises(ExportCheckError, match='disagrees with PyTorch'):
        export_onnx(TinyNet(bake_size=True), str(path), shape=TRACED, check_sizes=CHECKS)
    assert list(tmp_path.iterdir()) == []
    result = export_onnx(TinyNet(), str(path), shape=TRACED, check_sizes=CHECKS)
    assert result.dynamic_batch and [c.batch for c in result.checks] == [2, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.onnx']


def run_cli(argv):
    """tools/deployment/export_onnx.py's main() in this process; returns its exit message."""
    spec = importlib.util.spec_from_file_location('export_onnx_tool', REPO / 'tools/deployment/export_onnx.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    return str(exit_info.value)


@pytest.mark.parametrize('args, message', [
    (['configs/no_such.py', 'OUT'], 'config file not found: configs/no_such.py'),
    (['configs/demo/upernet_inline-pvt-nano_ade20k-demo.py', 'OUT', '--checkpoint', 'missing.pth'],
     'checkpoint file not found: missing.pth'),
    (['BACKBONE_ONLY', 'OUT', '--part', 'model'], 'not a detector or segmentor'),
    (['configs/demo/upernet_inline-pvt-nano_ade20k-demo.py', 'OUT', '--check-sizes', '227x355', '64x64'],
     'include the traced size'),
])
def test_cli_errors_name_the_problem_and_write_nothing(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    backbone_only = tmp_path / 'backbone.py'
    backbone_only.write_text(f"model = dict(type='mmvitattn.PVT', attention='inline', **{PVT_TINY!r})\n")
    out = tmp_path / 'out.onnx'
    args = [str(backbone_only) if a == 'BACKBONE_ONLY' else str(out) if a == 'OUT' else a for a in args]
    assert message in run_cli(args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['backbone.py']


def test_upernet_exports_image_to_logits(tmp_path):
    """UperNet (the demo's nano InLine-PVT) as image -> logits; the exported network is mmseg's own
    encode_decode, and onnxruntime matches it at an untraced non-square size."""
    graph = graph_from_config(str(REPO / 'configs/demo/upernet_inline-pvt-nano_ade20k-demo.py'), part='model')
    images = torch.randn(1, 3, *UNTRACED)
    with torch.no_grad():
        meta = [dict(img_shape=UNTRACED, ori_shape=UNTRACED, pad_shape=UNTRACED)]
        torch.testing.assert_close(graph(images), graph.segmentor.encode_decode(images, meta))
    path = tmp_path / 'upernet.onnx'
    result = export_onnx(graph, str(path), shape=TRACED, check_sizes=CHECKS)
    assert result.output_names == ['logits'] and result.linear_only and not result.square_values
    assert ort_matches_torch(graph, path, UNTRACED) <= 1e-4


def test_retinanet_exports_raw_head_outputs(tmp_path):
    """RetinaNet with an InLine-PVT (shrunk): image -> per-level class scores and box deltas, equal
    to bbox_head.forward; mmdet's predict_by_feat decodes the onnxruntime outputs into the same
    detections as the PyTorch model."""
    shrink = {'model.backbone.depths': (1, 1, 1, 1), 'model.backbone.init_cfg': None}
    graph = graph_from_config(str(REPO / 'configs/retinanet/retinanet_inline-pvt-t_fpn_1x_coco.py'), part='model',
                              cfg_options=shrink)
    path = tmp_path / 'retinanet.onnx'
    result = export_onnx(graph, str(path), shape=(99, 131), check_sizes=[(96, 128), (128, 192), (75, 107)])
    assert result.output_names == [f'cls_score{i}' for i in range(5)] + [f'bbox_pred{i}' for i in range(5)]
    assert ort_matches_torch(graph, path, (96, 160)) <= 1e-4
    detector = graph.detector
    images = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    outs = [torch.from_numpy(o) for o in onnxruntime_session(str(path)).run(None, {'images': images.numpy()})]
    meta = [dict(img_shape=(96, 160), ori_shape=(96, 160), scale_factor=(1.0, 1.0), pad_shape=(96, 160))]
    with torch.no_grad():
        ours = detector.bbox_head.predict_by_feat(outs[:5], outs[5:], batch_img_metas=meta, rescale=False)[0]
        ref = detector.bbox_head.predict_by_feat(*detector.bbox_head(detector.extract_feat(images)),
                                                 batch_img_metas=meta, rescale=False)[0]
    # Same detections up to the order of near-equal scores: every box has its twin in the other set.
    assert len(ours.bboxes) == len(ref.bboxes) > 0
    torch.testing.assert_close(ours.scores.sort().values, ref.scores.sort().values, atol=1e-4, rtol=0)
    assert float(torch.cdist(ours.bboxes, ref.bboxes, p=float('inf')).min(dim=1).values.max()) <= 1e-3


@SLOW
def test_mask_rcnn_exports_backbone_neck_and_rpn(tmp_path):
    graph = graph_from_config(str(REPO / 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'), part='model')
    path = tmp_path / 'mask_rcnn.onnx'
    result = export_onnx(graph, str(path), shape=TRACED, check_sizes=CHECKS)
    levels = 5
    assert result.output_names == ([f'feat{i}' for i in range(levels)] + [f'rpn_cls_score{i}' for i in range(levels)]
                                   + [f'rpn_bbox_pred{i}' for i in range(levels)])
    assert ort_matches_torch(graph, path, UNTRACED) <= 1e-4


def test_benchmark_runs_variants_in_onnxruntime(tmp_path):
    """benchmark_resolution.py --runtime torch onnxruntime: a row per variant and runtime, and the
    onnxruntime rows compute what PyTorch computes (one linear variant: each costs an export, and
    InLine's export is tested above)."""
    spec = importlib.util.spec_from_file_location('bench', REPO / 'tools/analysis/benchmark_resolution.py')
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.TRUNKS['tiny'] = ('ViT', dict(VIT_TINY))
    args = bench.parse_args(['--trunk', 'tiny', '--attention', 'none', 'castling', '--sizes', '64x96',
                             '--runtime', 'torch', 'onnxruntime', '--repeats', '1', '--min-repeats', '1',
                             '--warmup', '0', '--threads', '1', '--no-memory', '--no-flops'])
    result = bench.run_sweep(args)
    rows = {(r['attention'], r['runtime']): r for r in result['rows']}
    assert sorted(rows) == [(a, r) for a in ('castling', 'none') for r in ('onnxruntime', 'torch')]
    assert all(rows[a, 'onnxruntime']['max_abs_diff_vs_torch'] <= 1e-4 for a in ('castling', 'none'))
    with pytest.raises(SystemExit):
        bench.parse_args(['--runtime', 'onnxruntime', '--dtype', 'bfloat16'])


@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (2, 5), (None, 3)])
def test_adaptive_pool_as_matmul_equals_torch(output_size):
    """The exportable stand-in for nn.AdaptiveAvgPool2d (UperNet's pyramid pooling) gives its values."""
    from mmvitattn.deployment.onnx import AdaptiveAvgPoolAsMatmul
    x = torch.randn(2, 3, 13, 22)
    torch.testing.assert_close(AdaptiveAvgPoolAsMatmul(output_size)(x), torch.nn.AdaptiveAvgPool2d(output_size)(x))
