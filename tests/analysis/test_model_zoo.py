"""tools/analysis/model_zoo.py: one row per config, counted at its own input size."""
import importlib.util
import json
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


def test_a_row_counts_the_config_model_at_its_task_size(monkeypatch, capsys, tmp_path):
    """...and --out adds it to the rows already in the file (sorted by config), replacing its own."""
    from mmvitattn.analysis import backbone_flops
    monkeypatch.setattr(zoo, 'input_size', lambda cfg, scope: ('small', (64, 128)))  # a fast stand-in for 512x2048
    path = 'configs/sem_fpn/fpn_inline-pvt-t_4xb4-40k_ade20k-512x512.py'
    other = dict(config='configs/mask_rcnn/x.py', backbone='X', height=1, width=1, params_backbone=1, params=2,
                 gflops_backbone=0.5, gflops=1.0, checkpoint='-')
    out = tmp_path / 'zoo.json'
    out.write_text(json.dumps([dict(other, config=path, gflops=-1.0), other]))
    rows = zoo.main(['--configs', str(ROOT / path), '--out', str(out)])
    assert json.loads(out.read_text()) == rows and [r['config'] for r in rows] == [other['config'], path]
    assert rows[0] == other
    row = rows[1]
    assert row['config'] == path and row['checkpoint'] == 'checkpoints/inline_pvt_t.pth'
    model = zoo.build_from_config(str(ROOT / path))
    assert row['params'] == sum(p.numel() for p in model.parameters())
    assert row['gflops_backbone'] * 1e9 == pytest.approx(backbone_flops(model.backbone.eval(), (64, 128)).total)
    assert row['gflops'] > row['gflops_backbone']
    assert '| `fpn_inline-pvt-t_4xb4-40k_ade20k-512x512` | InLinePVT | 64x128 |' in capsys.readouterr().out


@pytest.mark.parametrize('path, size', [
    ('configs/mask_rcnn/mask-rcnn_inline-pvt-t_fpn_1x_coco.py', (800, 1280)),  # COCO's standard input
    ('configs/vitdet/mask-rcnn_inline-deit-s_lsj-100e_coco-1024.py', (1024, 1024)),  # padded to image_size
    ('configs/upernet/upernet_inline-pvt-t_4xb4-160k_ade20k-512x512.py', (512, 2048)),
    ('configs/upernet/upernet_inline-pvt-t_4xb4-160k_ade20k-640x640.py', (640, 2560)),
    ('configs/upernet/upernet_inline-pvt-t_4xb2-80k_cityscapes-512x1024.py', (1024, 2048)),
])
def test_each_config_is_counted_at_its_own_input_size(path, size):
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / path))
    assert zoo.input_size(cfg, cfg.default_scope)[1] == size
