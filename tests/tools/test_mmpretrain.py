"""An mmpretrain ImageClassifier with ``backbone=dict(type='mmvitattn.InLinePVT', ...)`` trains and
tests with mmpretrain's own tools/train.py and tools/test.py (the copies its wheel installs under
``mmpretrain/.mim/tools``) on a generated ImageNet-style folder."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = 'examples/mmpretrain/imagenet-folder_inline-pvt-nano.py'
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


def mmpretrain_tool(name: str) -> str:
    mmpretrain = pytest.importorskip('mmpretrain')
    path = Path(mmpretrain.__file__).parent / '.mim' / 'tools' / f'{name}.py'
    if not path.exists():
        pytest.skip(f'mmpretrain was installed without its tools ({path})')
    return str(path)


def run(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_mmpretrain_tools_train_and_test_our_backbone(tmp_path):
    train_tool, test_tool = mmpretrain_tool('train'), mmpretrain_tool('test')
    make_image_folder(tmp_path / 'data' / 'train', per_class=4, seed=0)
    make_image_folder(tmp_path / 'data' / 'val', per_class=2, seed=1)
    data = [f'{split}_dataloader.dataset.data_root={tmp_path}/data/' for split in ('train', 'val', 'test')]
    work = tmp_path / 'work'
    log = run(train_tool, CONFIG, '--work-dir', str(work), '--cfg-options', *data)
    assert (work / 'epoch_2.pth').exists()
    assert "type='mmvitattn.InLinePVT'" in log  # the config the Runner printed
    log = run(test_tool, CONFIG, str(work / 'epoch_2.pth'), '--work-dir', str(tmp_path / 'test'),
              '--cfg-options', *data)
    top1 = re.findall(r'accuracy/top1: ([0-9.]+)', log)
    assert top1 and 0.0 <= float(top1[-1]) <= 100.0, log[-2000:]
