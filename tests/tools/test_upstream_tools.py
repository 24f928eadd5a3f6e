"""Our configs also run with mmdet's and mmseg's own tools/train.py and tools/test.py, as installed
with those packages (custom_imports in the config is all they need), and an mmpretrain classifier
with our backbone with mmpretrain's."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmvitattn.datasets.demo_data import make_ade_demo, make_coco_demo

REPO = Path(__file__).resolve().parents[2]
MMPRETRAIN_CONFIG = 'examples/mmpretrain/imagenet-folder_inline-pvt-nano.py'
HUES = {'red': (200, 40, 40), 'green': (40, 180, 40), 'blue': (40, 40, 200)}


def make_image_folder(root: Path, per_class: int, seed: int) -> None:
    """root/<class>/*.png: one hue per class on noise (a split of an ImageNet-style folder)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name, rgb in HUES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(0, 25, (72, 80, 3)) + rgb, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f'{i}.png')


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


def test_mmpretrain_tools_train_and_test_our_backbone(tmp_path):
    """An mmpretrain ImageClassifier with ``backbone=dict(type='mmvitattn.InLinePVT', ...)`` trains and
    tests with mmpretrain's own tools on a generated ImageNet-style folder."""
    train_tool, test_tool = upstream_tool('mmpretrain', 'train'), upstream_tool('mmpretrain', 'test')
    make_image_folder(tmp_path / 'data' / 'train', per_class=4, seed=0)
    make_image_folder(tmp_path / 'data' / 'val', per_class=2, seed=1)
    data = [f'{split}_dataloader.dataset.data_root={tmp_path}/data/' for split in ('train', 'val', 'test')]
    work = tmp_path / 'work'
    log = run(train_tool, MMPRETRAIN_CONFIG, '--work-dir', str(work), '--cfg-options', *data)
    assert (work / 'epoch_2.pth').exists()
    assert "type='mmvitattn.InLinePVT'" in log  # the config the Runner printed
    log = run(test_tool, MMPRETRAIN_CONFIG, str(work / 'epoch_2.pth'), '--work-dir', str(tmp_path / 'test'),
              '--cfg-options', *data)
    top1 = re.findall(r'accuracy/top1: ([0-9.]+)', log)
    assert top1 and 0.0 <= float(top1[-1]) <= 100.0, log[-2000:]
