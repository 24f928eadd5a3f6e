"""tools/train.py stopped from outside: SIGTERM at a random iteration saves that iteration and
exits with the preempted code; kill -9 at random moments loses nothing. Each interrupted run,
resumed with --resume, ends exactly as the run that was never stopped."""
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_test_tools import DET_CONFIG, data_options, final_weights, logged_losses, run_tool

from mmvitattn.datasets.demo_data import make_coco_demo
from mmvitattn.engine import PREEMPTED_EXIT_CODE

REPO = Path(__file__).resolve().parents[2]
ITER_LOGGED = re.compile(r'Iter\(train\) \[\s*(\d+)/')
ITERS = 4


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco_demo(str(root), num_train=4, num_val=2)
    return root


def options(coco_root, max_iters):
    # No validation: only training state matters here. Checkpoints every iteration.
    return ['--cfg-options', *data_options(coco_root, ('train', )), 'val_dataloader=None', 'val_cfg=None',
            'val_evaluator=None', 'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1',
            'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=2',
            f'train_cfg.max_iters={max_iters}']


@pytest.fixture(scope='module')
def straight(coco_root, tmp_path_factory):
    """The run that is never interrupted."""
    work = tmp_path_factory.mktemp('straight')
    run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(work), *options(coco_root, ITERS))
    return work


def start_training(work, opts, *extra):
    return subprocess.Popen([sys.executable, 'tools/train.py', DET_CONFIG, '--work-dir', str(work), *extra, *opts],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def interrupt_after(proc, iteration, send, delay=0.0):
    """Read the run's log; once `iteration` is logged, wait `delay` s and call `send(proc)`."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = ITER_LOGGED.search(line)
        if match and int(match.group(1)) >= iteration:
            time.sleep(delay)
            send(proc)
            break
    out, _ = proc.communicate(timeout=300)
    return ''.join(lines) + out


def assert_same_weights(expected_path, got_path):
    expected, got = final_weights(expected_path), final_weights(got_path)
    assert expected.keys() == got.keys()
    differing = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:5]}'


def test_sigterm_saves_that_iteration_exits_preempted_and_resumes_exactly(coco_root, straight, tmp_path):
    opts = options(coco_root, ITERS)
    at = random.randint(1, ITERS - 2)  # leaves at least one iteration to resume
    proc = start_training(tmp_path, opts)
    log = interrupt_after(proc, at, lambda p: p.send_signal(signal.SIGTERM))
    assert proc.returncode == PREEMPTED_EXIT_CODE, f'SIGTERM after iteration {at}:\n{log[-3000:]}'
    saved = re.search(r'SIGTERM received: saved the checkpoint of iteration (\d+) to (\S+);', log)
    assert saved, log[-3000:]
    step, path = int(saved.group(1)), Path(saved.group(2))
    assert step in (at, at + 1) and path == tmp_path / f'iter_{step}.pth'  # the step that was running
    assert final_weights(path) and (tmp_path / 'last_checkpoint').read_text().strip() == str(path)
    assert max(logged_losses(tmp_path)) == step  # it stopped right after that step

    log = run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(tmp_path), '--resume', *opts)
    assert f'resumed epoch: 0, iter: {step}' in log
    expected, got = logged_losses(straight), logged_losses(tmp_path)
    assert sorted(got) == sorted(expected) == list(range(1, ITERS + 1))
    for it in expected:
        assert got[it] == expected[it], f'iteration {it}: {got[it]} != {expected[it]}'
    assert_same_weights(straight / f'iter_{ITERS}.pth', tmp_path / f'iter_{ITERS}.pth')


def kill_and_resume(work, opts, kills, max_iters):
    """kill -9 at random moments (some inside a checkpoint save), each time followed by --resume."""
    rng = random.Random()
    for attempt in range(kills):
        proc = start_training(work, opts, *(['--resume'] if attempt else []))
        at = rng.randint(1, max_iters - 1)
        log = interrupt_after(proc, at, lambda p: p.send_signal(signal.SIGKILL), delay=rng.uniform(0, 0.4))
        if proc.returncode == 0:  # the run finished before the kill landed
            continue
        assert proc.returncode == -signal.SIGKILL, log[-3000:]
    log = run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(work), '--resume', *opts)
    assert (work / f'iter_{max_iters}.pth').exists(), log[-3000:]
    return log


def test_kill_9_then_auto_resume_ends_with_the_uninterrupted_weights(coco_root, straight, tmp_path):
    kill_and_resume(tmp_path, options(coco_root, ITERS), kills=1, max_iters=ITERS)
    assert_same_weights(straight / f'iter_{ITERS}.pth', tmp_path / f'iter_{ITERS}.pth')


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('MMVITATTN_SLOW') != '1', reason='slow: set MMVITATTN_SLOW=1 to run')
def test_five_kills_in_a_row_lose_nothing(coco_root, tmp_path):
    iters = 10
    opts = options(coco_root, iters)
    reference = tmp_path / 'straight'
    run_tool('tools/train.py', DET_CONFIG, '--work-dir', str(reference), *opts)
    work = tmp_path / 'killed'
    kill_and_resume(work, opts, kills=5, max_iters=iters)
    assert_same_weights(reference / f'iter_{iters}.pth', work / f'iter_{iters}.pth')
    assert not [n for n in os.listdir(work) if n.endswith('.tmp')]  # leftovers of cut saves removed
