"""Device handling of the tools, checked on CPU: --amp / --amp-dtype, the launcher on GPUs and
without, SyncBN, the CUDA sweep's recorded settings, and tools/check_gpu.py's report."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvitattn.utils import runtime

REPO = Path(__file__).resolve().parents[2]
UPERNET = str(REPO / 'configs/upernet/upernet_inline-pvt-t_4xb4-160k_ade20k-512x512.py')


def load_tool(relative):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def norm_types(node):
    if isinstance(node, dict):
        return ([node['type']] if node.get('type') in ('BN', 'SyncBN') else []) + \
            [t for v in node.values() for t in norm_types(v)]
    if isinstance(node, (list, tuple)):
        return [t for v in node for t in norm_types(v)]
    return []


def test_amp_needs_cuda_and_sets_the_dtype(monkeypatch):
    cfg = Config.fromfile(UPERNET)
    with pytest.raises(SystemExit, match='--amp needs a CUDA device'):
        runtime.use_amp(cfg)
    with pytest.raises(SystemExit, match="--amp-dtype must be one of .* got 'int8'"):
        runtime.use_amp(cfg, 'int8')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: True)
    for dtype in ('float16', 'bfloat16'):
        cfg = Config.fromfile(UPERNET)
        runtime.use_amp(cfg, dtype)
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == dtype
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
    train = load_tool('tools/train.py')
    args = train.parse_args([UPERNET, '--amp-dtype', 'bfloat16'])
    assert train.build_config(args).optim_wrapper.dtype == 'bfloat16'  # --amp-dtype implies --amp


def test_syncbn_kept_on_gpus_replaced_by_bn_without(monkeypatch):
    cfg = Config.fromfile(UPERNET)
    assert 'SyncBN' in norm_types(cfg.model)  # mmseg's UperNet recipe
    runtime.set_launcher(cfg, 'slurm')  # distributed, no GPU: gloo
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert 'SyncBN' not in norm_types(cfg.model) and 'BN' in norm_types(cfg.model)

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    cfg = Config.fromfile(UPERNET)
    monkeypatch.setenv('LOCAL_RANK', '1')
    runtime.set_launcher(cfg, 'pytorch')
    assert 'SyncBN' in norm_types(cfg.model) and cfg.env_cfg.dist_cfg.backend == 'nccl'
    monkeypatch.setenv('LOCAL_RANK', '2')
    with pytest.raises(SystemExit, match='LOCAL_RANK=2 has no GPU: 2 visible'):
        runtime.set_launcher(cfg, 'pytorch')


def test_sweep_forward_backward_and_sdpa_kernel_names():
    bench = load_tool('tools/analysis/benchmark_resolution.py')
    bench.TRUNKS['tiny'] = ('ViT', dict(arch=None, embed_dim=64, depth=2, num_heads=2))
    x = torch.randn(1, 3, 64, 48)
    softmax, floor = bench.build_trunk('tiny', 'softmax'), bench.build_trunk('tiny', 'none')
    assert bench.forward(softmax, x, torch.float32, 'train') is None
    assert all(p.grad is not None for p in softmax.parameters() if p.requires_grad)
    assert bench.sdpa_backends(softmax, x, torch.float32, 'infer') == ['flash (cpu)']
    assert bench.sdpa_backends(floor, x, torch.float32, 'train') == []
    settings = bench.numeric_settings('cpu')
    assert set(settings) >= {'float32_matmul_precision', 'cuda_matmul_allow_tf32', 'cudnn_allow_tf32'}
    with pytest.raises(SystemExit):
        bench.parse_args(['--mode', 'backward'])


def test_check_gpu_report_tables(tmp_path):
    check = load_tool('tools/check_gpu.py')
    run_dir = tmp_path / '20260101_000000' / 'vis_data'
    run_dir.mkdir(parents=True)
    (run_dir / 'scalars.json').write_text('{"iter": 10, "loss": 2.5, "lr": 1}\n{"iter": 20, "loss": 1.25}\n')
    losses = check.logged_losses(str(tmp_path))
    assert losses == [(10, 2.5), (20, 1.25)]
    runs = [dict(config='configs/demo/x.py', precision='amp-bf16', iters=20, train_s=3.0, losses=losses,
                 metric='mIoU', metrics={'mIoU': 41.5}, ok=True)]
    table = check.training_table(runs)
    assert '| `x.py` | amp-bf16 | 20 | 3.0 | 2.500 -> 1.250 | mIoU 41.500 | ok |' in table
    rows = [dict(attention=a, height=224, width=224, latency_ms=ms, peak_mem_mib=mib, sdpa=k)
            for a, ms, mib, k in [('none', 1.0, 10, []), ('softmax', 2.5, 30, ['flash'])]]
    sweeps = [dict(trunk='deit-s', dtype='bfloat16', mode='forward', rows=rows),
              dict(trunk='pvt-t', dtype='float32', mode='forward', error='exit code 1')]
    table = check.sweep_table(sweeps)
    assert '| bfloat16 | forward | 224x224 | 1.00 / 10 | - | 2.50 / 30 | - | - | - | flash |' in table
    assert '| float32 | forward | FAILED: exit code 1 |' in table
    json.dumps(sweeps)  # the report is JSON
