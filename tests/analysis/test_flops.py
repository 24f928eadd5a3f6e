"""FLOP counts against formulas derived by hand from the shapes (one unit = one multiply-add;
element-wise ops 1 per output element, reductions 1 per input element, softmax 5 per element)."""
import importlib.util
import json
import os
import platform
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer
from torch import nn

from mmvitattn.analysis import (SOFTMAX_PER_ELEMENT, STANDARD_SIZES, backbone_flops, count_flops, parse_size,
                                sdpa_flop_count)
from mmvitattn.attention import build_attention

H, W, C, HEADS = 5, 7, 64, 2  # a non-square map
D = C // HEADS
N = 1 + H * W  # with a cls token
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SDPA(nn.Module):

    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Mixer(nn.Module):
    """A token mixer called with fixed (H, W), so the analyzer can trace it with one tensor input."""

    def __init__(self, name, **kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.mixer = build_attention(name, C, HEADS, **kwargs)

    def forward(self, x):
        return self.mixer(x, (H, W))


def tokens(batch=1):
    return torch.randn(batch, N, C)


def test_linear_layer():
    b, n, cin, cout = 2, 13, 24, 40
    result = count_flops(nn.Linear(cin, cout), torch.randn(b, n, cin))
    assert result.total == b * n * cin * cout  # bias not counted
    assert result.unsupported == {}


def test_sdpa_counted_and_plain_mmengine_misses_it():
    b, h, nq, nk, d, dv = 2, 3, 11, 17, 8, 12
    q, k, v = torch.randn(b, h, nq, d), torch.randn(b, h, nk, d), torch.randn(b, h, nk, dv)
    logits = b * h * nq * nk
    products = logits * d + logits * dv
    assert count_flops(SDPA(), (q, k, v)).total == products + SOFTMAX_PER_ELEMENT * logits
    assert count_flops(SDPA(), (q, k, v), elementwise=False).total == products
    mask = torch.ones(b, 1, 1, nk, dtype=torch.bool)
    assert count_flops(SDPA(), (q, k, v, mask)).total == products + (SOFTMAX_PER_ELEMENT + 1) * logits
    assert sdpa_flop_count(q.shape, k.shape, v.shape) == products + SOFTMAX_PER_ELEMENT * logits
    # Why the handle exists: mmengine's own counter leaves SDPA out entirely.
    plain = FlopAnalyzer(SDPA(), (q, k, v)).unsupported_ops_warnings(False)
    assert plain.total() == 0 and 'aten::scaled_dot_product_attention' in plain.unsupported_ops()


def test_softmax_written_out_counts_like_sdpa():
    """The same rules inside and outside SDPA: an explicit softmax(q k^T) v counts the same."""

    class Explicit(nn.Module):

        def forward(self, q, k, v):
            return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v

    q, k, v = torch.randn(1, 2, 9, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    assert count_flops(Explicit(), (q, k, v)).total == count_flops(SDPA(), (q, k, v)).total


def test_softmax_mixer_block():
    result = count_flops(Mixer('softmax'), tokens(), elementwise=False)
    expected = N * C * 3 * C + N * C * C + 2 * HEADS * N * N * D  # qkv, proj, q k^T and A v
    assert result.total == expected
    assert result.by_operator['scaled_dot_product_attention'] == 2 * HEADS * N * N * D


def test_inline_mixer_block():
    """InLine at a non-square size: the products of its formula, all linear in N."""
    result = count_flops(Mixer('inline'), tokens(), elementwise=False)
    expected = (
        N * C * 3 * C + N * C * C  # qkv, proj
        + C * 2 * C  # mean(k), mean(v) from mean(x): one (C -> 2C) product
        + N * C * D  # K^T V, per head d x d over N tokens
        + C * D  # mean(k)^T mean(v)
        + N * C * D  # q (d x d)
        + C * C // HEADS + 9 * C * C // HEADS  # the kernel-predicting grouped MLP
        + H * W * C * 9)  # the 3x3 depthwise conv on the H x W map (cls token excluded)
    assert result.total == expected
    assert result.unsupported == {}


def test_inline_mixer_block_with_the_folded_query():
    """Where the tokens outnumber the channels InLine folds its d x d matrices into q's projection:
    one N C^2 product replaces q's projection and q (d x d); building the folded weight is C^2 d."""
    h, w = 9, 11
    n = 1 + h * w
    assert n > C

    class Big(Mixer):
        def forward(self, x):
            return self.mixer(x, (h, w))

    result = count_flops(Big('inline'), torch.randn(1, n, C), elementwise=False)
    expected = (
        n * C * 2 * C + n * C * C  # k and v, proj
        + C * 2 * C + n * C * D + C * D  # mean(k), mean(v); K^T V; mean(k)^T mean(v)
        + C * C * D + C * D  # the folded weight Wq^T KV and bias bq KV
        + n * C * C  # x (Wq^T KV), accumulated into the local conv's output
        + C * C // HEADS + 9 * C * C // HEADS  # the kernel-predicting grouped MLP
        + h * w * C * 9)  # the 3x3 depthwise conv
    assert result.total == expected
    assert result.unsupported == {}


def test_castling_mixer_block():
    result = count_flops(Mixer('castling', kernel_size=9), tokens(), elementwise=False)
    expected = (N * C * 3 * C + N * C * C  # qkv, proj
                + N * C * D  # k^^T v
                + N * C * D  # q^ (k^^T v)
                + N * C * 9)  # (9, 1) depthwise conv along the tokens
    assert result.total == expected
    # With element-wise work: three L2 norms over (N, C) (q, k, y) are reductions of N*C each.
    full = count_flops(Mixer('castling'), tokens())
    assert full.by_operator['linalg_vector_norm'] == 3 * N * C
    assert full.unsupported == {}


@pytest.mark.parametrize('name', ['inline', 'castling'])
def test_training_mode_counts_like_eval(name):
    """Counted in training mode (grads on the weights: the custom backwards are not traced) as in eval."""
    mixer = Mixer(name)
    counts = [count_flops(mixer.train(mode), tokens()).total for mode in (True, False)]
    assert counts[0] == counts[1] > 0


def test_linear_attention_is_linear_and_softmax_quadratic_in_tokens():
    """Doubling the tokens doubles InLine/Castling's counted work (minus the N-independent part)
    and more than doubles softmax's: the attention term of the count is N^2."""

    def per_size(name, n):
        mixer = build_attention(name, C, HEADS)

        class Fixed(nn.Module):

            def __init__(self):
                super().__init__()
                self.m = mixer

            def forward(self, x):
                return self.m(x, (n, 8))

        return count_flops(Fixed(), torch.randn(1, n * 8, C)).total

    for name in ('inline', 'castling'):
        # 128, 256 and 512 tokens: all above the width, where InLine folds its query (below it the
        # count is affine too, with a slope C d higher per token: see the two InLine block tests).
        a, b, c = per_size(name, 16), per_size(name, 32), per_size(name, 64)
        assert c - b == 2 * (b - a)  # exactly affine in N
    a, b, c = per_size('softmax', 8), per_size('softmax', 16), per_size('softmax', 32)
    assert c - b > 2 * (b - a)


def test_backbone_counts_everything_at_a_detection_size():
    from mmvitattn.backbones import ViT
    model = ViT(arch=None, embed_dim=C, depth=1, num_heads=HEADS, attention='inline')
    result = backbone_flops(model, '80x112')  # 5 x 7 patches
    assert result.unsupported == {}
    patch = C * 3 * 16 * 16 * H * W
    assert result.by_operator['conv'] >= patch
    assert result.params == sum(p.numel() for p in model.parameters())


def test_parse_size():
    assert parse_size('224') == (224, 224)
    assert parse_size('800x1280') == (800, 1280)
    assert parse_size('coco') == STANDARD_SIZES['coco'] == (800, 1280)
    assert parse_size('ade20k') == (512, 2048)
    for bad in ('1280*800', 'x', '0x5', 'large'):
        with pytest.raises(ValueError, match=re.escape(f'bad input size {bad!r}')):
            parse_size(bad)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'tools', 'analysis', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_rejects_bad_names():
    bench = load_tool('benchmark_resolution')
    with pytest.raises(ValueError, match="unknown attention 'linformer'"):
        bench.build_trunk('deit-t', 'linformer')
    with pytest.raises(ValueError, match="unknown trunk 'vit-h'"):
        bench.build_trunk('vit-h', 'inline')
    with pytest.raises(SystemExit):
        bench.parse_args(['--sizes', '224', 'big'])


def test_benchmark_floors():
    """'none' replaces every mixer by the identity; 'proj' keeps only the projections."""
    bench = load_tool('benchmark_resolution')
    bench.TRUNKS['tiny'] = ('ViT', dict(arch=None, embed_dim=C, depth=2, num_heads=HEADS))
    x = torch.randn(1, 3, 16 * H, 16 * W)
    none, proj, inline = (bench.build_trunk('tiny', name) for name in ('none', 'proj', 'inline'))
    assert not any(hasattr(m, 'attention_name') for m in none.modules())
    counts = [count_flops(m, x, elementwise=False).total for m in (none, proj, inline)]
    # Per block, 'proj' adds exactly the q/k/v and output projections over the N tokens.
    assert counts[1] - counts[0] == 2 * (N * C * 3 * C + N * C * C)
    assert counts[0] < counts[1] < counts[2]


def test_benchmark_train_mode_batch_and_ratios(capsys):
    """--mode train --batch 2: rows carry batch and mode, FLOPs are 3x the forward's per image times
    the batch, the ratios are the quotients of the rows' own figures, and the summary prints them."""
    bench = load_tool('benchmark_resolution')
    bench.TRUNKS['tiny'] = ('ViT', dict(arch=None, embed_dim=C, depth=1, num_heads=HEADS))
    args = bench.parse_args(['--trunk', 'tiny', '--attention', 'proj', 'softmax', 'inline', '--sizes', '32x48',
                             '--mode', 'train', '--batch', '2', '--repeats', '1', '--min-repeats', '1',
                             '--warmup', '0', '--threads', '1', '--no-memory', '--no-flops'])
    assert (args.mode, args.batch) == ('train', 2)
    assert bench.parse_args(['--mode', 'forward-backward']).mode == 'train'  # the old name
    with pytest.raises(SystemExit):
        bench.parse_args(['--batch', '0'])
    result = bench.run_sweep(args)
    rows = {r['attention']: r for r in result['rows']}
    assert result['batch'] == 2 and all(r['batch'] == 2 and r['mode'] == 'train' for r in rows.values())
    # The result names the CPU's model (figures depend on it), not only its architecture.
    cpuinfo = open('/proc/cpuinfo').read() if os.path.isfile('/proc/cpuinfo') else ''
    if 'model name' in cpuinfo:
        assert result['cpu'] != platform.machine() and f': {result["cpu"]}\n' in cpuinfo
    # FLOPs and memory of the train step, as the memory subprocess measures them (here in-process).
    counted = {}
    for name in ('softmax', 'inline'):
        one = bench.measure_one('tiny', name, (32, 48), 'cpu', torch.float32, True, 'train', 2)
        per_image = backbone_flops(bench.build_trunk('tiny', name), (32, 48)).total
        assert one['flops'] == 3 * 2 * per_image and one['peak_mem_mib'] >= 0
        counted[name] = rows[name]['flops'] = one['flops']
    rows['proj']['flops'] = 1
    bench.add_ratios(list(rows.values()))
    inline, softmax = rows['inline'], rows['softmax']
    assert inline['speedup_vs_softmax'] == softmax['latency_ms'] / inline['latency_ms']
    assert inline['latency_vs_proj'] == inline['latency_ms'] / rows['proj']['latency_ms']
    assert inline['flop_ratio_vs_softmax'] == counted['softmax'] / counted['inline']
    assert inline['speedup_of_flop_ratio'] == inline['speedup_vs_softmax'] / inline['flop_ratio_vs_softmax']
    assert 'latency_vs_proj' not in rows['proj'] and 'speedup_vs_softmax' not in softmax
    capsys.readouterr()
    bench.print_summary(result)
    line = next(s for s in capsys.readouterr().out.splitlines() if ' inline ' in s)
    assert f'{inline["flop_ratio_vs_softmax"]:.2f}' in line and f'{inline["speedup_vs_softmax"]:.2f}' in line


def test_cascade_detectors_count_every_stage():
    """Each of Cascade R-CNN's three stages runs its bbox and mask heads on the same fixed boxes,
    so all three are counted, and equally (same head architecture)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS as DET_MODELS
    from mmvitattn.analysis import model_flops
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/cascade_rcnn/cascade-mask-rcnn_inline-swin-t_fpn_1x_coco.py'))
    init_default_scope('mmdet')
    cfg.model.backbone.update(init_cfg=None, depths=(1, 1, 1, 1))
    counts = model_flops(DET_MODELS.build(cfg.model).eval(), (64, 96), num_proposals=20)['model']
    for head in ('bbox_head', 'mask_head'):
        stages = [counts.by_module.get(f'roi_head.{head}.{i}', 0) for i in range(3)]
        assert stages[0] > 0 and stages == [stages[0]] * 3, (head, stages)
    assert counts.total > sum(counts.by_module.get(f'roi_head.{h}.{i}', 0)
                              for h in ('bbox_head', 'mask_head') for i in range(3))


def test_get_flops_out_keeps_the_other_models_rows(tmp_path):
    """--out merges by model and size: counting a second backbone into the same file keeps the
    first one's row, and counting the first again replaces its row instead of adding one."""
    from mmvitattn.backbones import ViT
    tool = load_tool('get_flops')
    out = str(tmp_path / 'flops.json')
    tiny = ['arch=None', f'embed_dim={C}', 'depth=1', f'num_heads={HEADS}', 'pretrain_img_size=32']
    args = ['--size', '32x48', '--out', out, '--backbone-cfg'] + tiny
    tool.main(['--backbone', 'ViT'] + args + ['attention=softmax'])
    tool.main(['--backbone', 'mmvitattn.ViT'] + args + ['attention=softmax'])
    rows = tool.main(['--backbone', 'ViT'] + args + ['attention=inline'])
    with open(out) as f:
        saved = json.load(f)['rows']
    assert [(r['model'], r['height'], r['width']) for r in saved] == [('ViT', 32, 48), ('mmvitattn.ViT', 32, 48)]
    assert saved == rows
    torch.manual_seed(0)
    inline = ViT(arch=None, embed_dim=C, depth=1, num_heads=HEADS, pretrain_img_size=32, attention='inline').eval()
    assert saved[0]['backbone']['total'] == backbone_flops(inline, (32, 48)).total  # the recount replaced it
