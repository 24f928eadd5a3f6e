"""Our configs also run with mmdet's and mmseg's own tools/train.py and tools/test.py, as installed
with those packages (custom_imports in the config is all they need)."""
import subprocess
import sys
from pathlib import Path

import pytest

from mmvitattn.datasets.demo_data import make_ade_demo, make_coco_demo

REPO = Path(__file__).resolve().parents[2]


def upstream_tool(package: str, name: str) -> str:
    module = pytest.importorskip(package)
    path = Path(module.__file__).parent / '.mim' / 'tools' / f'{name}.py'
    if not path.exists():
        pytest.skip(f'{package} was installed without its tools ({path})')
    return str(path)


def run(*args):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_upstream_train_and_test_run_our_config(package, tmp_path):
    if package == 'mmdet':
        config = 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'
        root = tmp_path / 'coco'
        make_coco_demo(str(root), num_train=8, num_val=4)
        ann = f'{root}/annotations/instances_val2017.json'
        extra = [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
        metric = 'coco/bbox_mAP'
    else:
        config = 'configs/demo/upernet_inline-pvt-nano_ade20k-demo.py'
        root = tmp_path / 'ade'
        make_ade_demo(str(root), num_train=8, num_val=4)
        extra = []
        metric = 'mIoU'
    data = [f'{s}_dataloader.dataset.data_root={root}/' for s in ('train', 'val', 'test')] + extra
    work = tmp_path / 'work'
    run(upstream_tool(package, 'train'), config, '--work-dir', str(work), '--cfg-options', *data,
        'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=2')
    assert (work / 'iter_2.pth').exists()
    # Testing loads the checkpoint mmengine wrote, through our safe loader (custom_imports).
    log = run(upstream_tool(package, 'test'), config, str(work / 'iter_2.pth'), '--work-dir',
              str(tmp_path / 'test'), '--cfg-options', *data)
    assert metric in log
