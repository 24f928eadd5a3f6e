"""tools/train.py and tools/test.py end to end on tiny generated data, as a user runs them:
train, resume from a checkpoint mmengine wrote (torch's safe loading stays on), evaluate."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmvitattn.datasets.demo_data import make_ade_demo, make_coco_demo

REPO = Path(__file__).resolve().parents[2]
DET_CONFIG = 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'
SEG_CONFIG = 'configs/demo/upernet_inline-pvt-nano_ade20k-demo.py'


def run_tool(*args):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def data_options(root, loaders=('train', 'val', 'test')):
    return [f'{split}_dataloader.dataset.data_root={root}/' for split in loaders]


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco_demo(str(root), num_train=8, num_val=4)
    return root


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('ade')
    make_ade_demo(str(root), num_train=8, num_val=4)
    return root


def logged_losses(work: Path) -> dict:
    """{iteration: {loss name: value}} from the run's scalars (logger interval 1: one per iter)."""
    out = {}
    for path in sorted(work.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if 'iter' in record and 'loss' in record:
                out[record['iter']] = {k: v for k, v in record.items() if k.startswith('loss')}
    return out


def final_weights(path: Path) -> dict:
    from mmvitattn.checkpoint import load_checkpoint_file
    return load_checkpoint_file(str(path))['state_dict']


def det_options(coco_root):
    ann = f'{coco_root}/annotations/instances_val2017.json'
    return ['--cfg-options', *data_options(coco_root), f'val_evaluator.ann_file={ann}',
            f'test_evaluator.ann_file={ann}', 'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
            'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=3',
            'train_cfg.val_interval=100']


def test_detection_train_and_test(coco_root, tmp_path):
    """Two iterations, then tools/test.py on the checkpoint: COCO box and mask metrics, predictions."""
    work = tmp_path / 'work'
    run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(work), *det_options(coco_root), 'train_cfg.max_iters=2')
    assert sorted(logged_losses(work)) == [1, 2]
    metrics_file, preds = tmp_path / 'metrics.json', tmp_path / 'preds.pkl'
    ann = f'{coco_root}/annotations/instances_val2017.json'
    run_tool('tools/test.py', DET_CONFIG, str(work / 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
             '--metrics-out', str(metrics_file), '--out', str(preds), '--cfg-options',
             *data_options(coco_root, ('test', )), f'test_evaluator.ann_file={ann}')
    metrics = json.loads(metrics_file.read_text())
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    assert preds.stat().st_size > 0


# The fast suite resumes exactly in tests/tools/test_preemption.py (SIGTERM, kill -9, then --resume).
@pytest.mark.skipif(os.environ.get('MMVITATTN_SLOW') != '1', reason='slow: set MMVITATTN_SLOW=1 to run')
def test_detection_train_resume_matches_the_uninterrupted_run(coco_root, tmp_path):
    """Stopped after a checkpoint and resumed with a longer schedule, training reaches the same
    losses at every iteration and exactly the same weights as the uninterrupted run with the same seed."""
    work, straight = tmp_path / 'work', tmp_path / 'straight'
    options = det_options(coco_root)
    run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(straight), *options, 'train_cfg.max_iters=4')
    run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(work), *options, 'train_cfg.max_iters=2')
    assert (work / 'iter_2.pth').exists()

    # Resume the run: mmengine's checkpoint holds its own log objects, which must load safely.
    log = run_tool('tools/train.py', DET_CONFIG, '--resume', '--work-dir', str(work), *options,
                   'train_cfg.max_iters=4')
    assert 'resumed epoch: 0, iter: 2' in log
    assert (work / 'iter_4.pth').exists()

    expected, got = logged_losses(straight), logged_losses(work)
    assert sorted(expected) == sorted(got) == [1, 2, 3, 4]
    for it in expected:
        assert got[it] == expected[it], f'iteration {it}: {got[it]} != {expected[it]}'
    ref, resumed = final_weights(straight / 'iter_4.pth'), final_weights(work / 'iter_4.pth')
    assert ref.keys() == resumed.keys()
    differing = [k for k in ref if not torch.equal(ref[k], resumed[k])]
    assert not differing, f'{len(differing)} tensors differ after resuming, e.g. {differing[:5]}'
    # The run moved: the weights are not the ones it started from.
    assert any(not torch.equal(ref[k], v) for k, v in final_weights(straight / 'iter_2.pth').items())


def test_segmentation_train_and_test(ade_root, tmp_path):
    work = tmp_path / 'work'
    run_tool('tools/train.py', SEG_CONFIG, '--work-dir', str(work), '--cfg-options', *data_options(ade_root),
             'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
             'default_hooks.checkpoint.interval=2')
    metrics_file = tmp_path / 'metrics.json'
    run_tool('tools/test.py', SEG_CONFIG, str(work / 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
             '--metrics-out', str(metrics_file), '--cfg-options', *data_options(ade_root, ('test', )))
    assert {'mIoU', 'aAcc'} <= set(json.loads(metrics_file.read_text()))


def test_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    """tools/test.py exits with the message (in this process: a fresh one would only add its start-up)."""
    import importlib.util
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it; restored afterwards
    monkeypatch.chdir(REPO)
    spec = importlib.util.spec_from_file_location('test_tool', REPO / 'tools' / 'test.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        tool.main([SEG_CONFIG, str(tmp_path / 'none.pth')])
    assert str(exit_info.value) == f'checkpoint not found: {tmp_path / "none.pth"}'


def test_train_tool_keeps_the_rng_state_and_fault_hooks(tmp_path):
    """Exact resume and fault handling need their hooks even when a config's own custom_hooks
    list dropped them."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('train_tool', REPO / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for extra in ([], ['--cfg-options', 'custom_hooks=[]']):
        args = tool.parse_args([DET_CONFIG, '--work-dir', str(tmp_path), *extra])
        hooks = tool.build_config(args).custom_hooks
        types = [h['type'] for h in hooks]
        assert types.count('mmvitattn.RNGStateHook') == types.count('mmvitattn.FaultToleranceHook') == 1
