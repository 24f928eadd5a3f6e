"""torchrun with two CPU processes (gloo): tools/dist_train.sh trains and saves a checkpoint,
tools/dist_test.sh evaluates it."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mmvitattn.datasets.demo_data import make_coco_demo

REPO = Path(__file__).resolve().parents[2]
CONFIG = 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(script, *args):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    result = subprocess.run(['bash', script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_two_process_training_and_testing_on_cpu(tmp_path):
    data = tmp_path / 'coco'
    make_coco_demo(str(data), num_train=8, num_val=4)
    ann = f'{data}/annotations/instances_val2017.json'
    data_opts = [f'{s}_dataloader.dataset.data_root={data}/' for s in ('train', 'val', 'test')]
    data_opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    work = tmp_path / 'work'
    log = run('tools/dist_train.sh', CONFIG, '2', '--work-dir', str(work), '--cfg-options', *data_opts,
              'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
              'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1')
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert (work / 'iter_2.pth').exists()

    metrics = tmp_path / 'metrics.json'
    run('tools/dist_test.sh', CONFIG, str(work / 'iter_2.pth'), '2', '--work-dir', str(tmp_path / 'test'),
        '--metrics-out', str(metrics), '--cfg-options', *data_opts)
    assert 'coco/bbox_mAP' in json.loads(metrics.read_text())


def test_a_killed_rank_is_named_and_the_other_exits_in_time(tmp_path):
    """kill -9 of rank 1 during training: rank 0 names it and ends within the configured
    process-group timeout (30 s) instead of waiting in the next all-reduce."""
    import re
    import signal
    import time

    import psutil
    data = tmp_path / 'coco'
    make_coco_demo(str(data), num_train=4, num_val=2)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    cmd = ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
           f'train_dataloader.dataset.data_root={data}/', 'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',
           'train_dataloader.batch_size=1', 'train_cfg.max_iters=1000', 'default_hooks.logger.interval=1',
           'env_cfg.dist_cfg.timeout=30', 'custom_hooks.1.peer_timeout=5']
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # rank 0 logs the iterations
        lines.append(line)
        if re.search(r'Iter\(train\) \[\s*2/', line):
            break
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if 'RANK' in p.environ()]
    ranks = {p.environ()['RANK']: p for p in workers}
    assert sorted(ranks) == ['0', '1'], ''.join(lines)[-3000:]
    victim = ranks['1']
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    elapsed = time.monotonic() - killed_at
    log = ''.join(lines) + out
    assert proc.returncode != 0
    assert re.search(rf'rank 0: rank 1 \(pid {victim.pid} on \S+\) (is gone|has not answered)', log), log[-4000:]
    assert elapsed < 30, f'rank 0 took {elapsed:.1f} s to exit'
    assert not ranks['0'].is_running() or ranks['0'].status() == psutil.STATUS_ZOMBIE
