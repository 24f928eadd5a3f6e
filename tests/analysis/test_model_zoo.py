"""tools/analysis/model_zoo.py: one row per config, counted at the task's standard input."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location('model_zoo', ROOT / 'tools' / 'analysis' / 'model_zoo.py')
zoo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo)


def test_every_config_but_the_demo_is_listed():
    listed = zoo.zoo_configs()
    on_disk = [p for p in (ROOT / 'configs').rglob('*.py') if p.parent.name not in ('_base_', 'demo')]
    assert len(listed) == len(on_disk) and not any('demo' in p for p in listed)


def test_a_row_counts_the_config_model_at_its_task_size(monkeypatch, capsys):
    from mmvitattn.analysis import backbone_flops
    monkeypatch.setitem(zoo.STANDARD_SIZE, 'mmseg', ('small', (64, 128)))  # a fast stand-in for 512x2048
    path = 'configs/sem_fpn/fpn_inline-pvt-t_4xb4-40k_ade20k-512x512.py'
    (row, ) = zoo.main(['--configs', str(ROOT / path)])
    assert row['config'] == path and row['checkpoint'] == 'checkpoints/inline_pvt_t.pth'
    model = zoo.build_from_config(str(ROOT / path))
    assert row['params'] == sum(p.numel() for p in model.parameters())
    assert row['gflops_backbone'] * 1e9 == pytest.approx(backbone_flops(model.backbone.eval(), (64, 128)).total)
    assert row['gflops'] > row['gflops_backbone']
    assert '| `fpn_inline-pvt-t_4xb4-40k_ade20k-512x512` | InLinePVT | 64x128 |' in capsys.readouterr().out
