"""FaultToleranceHook inside mmengine's Runner on the tiny detection demo: a NaN loss stops
training (or is skipped) with nothing of that step saved; an image that does not decode is named
(or skipped, counted and reported); the preemption signal handlers."""
import os
import signal
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmvitattn.datasets.demo_data import make_coco_demo
from mmvitattn.datasets.guard import SampleLoadError
from mmvitattn.engine import PREEMPTED_EXIT_CODE, FaultToleranceHook, NonFiniteLossError
from mmvitattn.engine.preemption import PreemptionSignals

REPO = Path(__file__).resolve().parents[2]
DET_CONFIG = REPO / 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco_demo(str(root), num_train=4, num_val=2)
    return root


def demo_runner(work_dir, data_root, max_iters, **fault_options):
    return Runner.from_cfg(demo_config(work_dir, data_root, max_iters, **fault_options))


def demo_config(work_dir, data_root, max_iters, **fault_options):
    cfg = Config.fromfile(str(DET_CONFIG))
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': f'{data_root}/', 'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': max_iters, 'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1, 'default_hooks.checkpoint.max_keep_ckpts': 10})
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # no evaluation in these runs
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.custom_hooks = [dict(type='mmvitattn.RNGStateHook'), dict(type='mmvitattn.FaultToleranceHook', **fault_options)]
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    return cfg


def train(runner):
    """runner.train(), then the signal handlers of this test process are put back."""
    try:
        return runner.train()
    finally:
        for hook in runner.hooks:
            if isinstance(hook, FaultToleranceHook):
                hook.preemption.restore()


class NaNLossAt(Hook):
    """Makes the RPN box loss NaN in one iteration (1-based, as logged)."""
    priority = 'VERY_HIGH'

    def __init__(self, iteration):
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        runner.model.rpn_head.loss_bbox.loss_weight = float('nan') if runner.iter + 1 == self.iteration else 1.0


def parameters_and_meta(path):
    from mmvitattn.checkpoint import load_checkpoint_file
    return load_checkpoint_file(str(path))


def parameters(path):
    return parameters_and_meta(path)['state_dict']


def test_nan_loss_stops_before_the_step_and_names_it(coco_root, tmp_path):
    runner = demo_runner(tmp_path, coco_root, max_iters=2)
    runner.register_hook(NaNLossAt(2))
    with pytest.raises(NonFiniteLossError) as err:
        train(runner)
    message = str(err.value)
    assert 'iteration 2:' in message and 'loss_rpn_bbox=nan' in message
    assert 'loss_cls' not in message.split('Training stopped')[0]  # only the terms that are not finite
    assert f'Last good checkpoint: {tmp_path / "iter_1.pth"}' in message
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_1.pth']
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'iter_1.pth')


def test_nan_loss_with_skip_leaves_that_update_out(coco_root, tmp_path):
    runner = demo_runner(tmp_path, coco_root, max_iters=3, nonfinite_loss='skip')
    runner.register_hook(NaNLossAt(2))
    train(runner)
    after_1, after_2, after_3 = (parameters(tmp_path / f'iter_{i}.pth') for i in (1, 2, 3))
    assert all(torch.equal(after_1[k], after_2[k]) for k in after_1)  # the NaN step changed nothing
    assert any(not torch.equal(after_2[k], after_3[k]) for k in after_2)  # training went on
    assert all(torch.isfinite(v).all() for v in after_3.values() if v.is_floating_point())


def truncate_one_image(root):
    """Cut a training JPEG in half, as an interrupted copy leaves it."""
    image = sorted((root / 'train2017').glob('*.jpg'))[1]
    data = image.read_bytes()
    image.write_bytes(data[:len(data) // 2])
    return image, data


def test_an_image_that_does_not_decode_is_named(coco_root, tmp_path):
    image, data = truncate_one_image(coco_root)
    try:
        runner = demo_runner(tmp_path, coco_root, max_iters=2)
        with pytest.raises(SampleLoadError) as err:
            train(runner)
    finally:
        image.write_bytes(data)
    message = str(err.value)
    assert str(image) in message and 'index 1 ' in message and "bad_samples='skip'" in message


def test_with_skip_a_bad_image_is_skipped_counted_and_reported(coco_root, tmp_path):
    """In a data loader worker process: the count reaches the main process's report."""
    image, data = truncate_one_image(coco_root)
    try:
        cfg = demo_config(tmp_path, coco_root, max_iters=2, bad_samples='skip')
        cfg.train_dataloader.num_workers = 1
        train(Runner.from_cfg(cfg))
    finally:
        image.write_bytes(data)
    assert (tmp_path / 'iter_2.pth').exists()
    log = ''.join(p.read_text() for p in tmp_path.glob('*/*.log'))
    assert f'skipped 1 training sample(s) that could not be loaded; on this rank: index 1 ({image})' in log


class SignalDuring(Hook):
    """Sends this process a signal while one iteration (1-based) runs."""

    def __init__(self, iteration, signum=signal.SIGTERM):
        self.iteration, self.signum = iteration, signum

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), self.signum)


def test_preemption_in_the_middle_of_an_epoch_saves_that_iteration(coco_root, tmp_path):
    """Epoch-based loop (mmdet's recipes): the checkpoint of iteration 1 of a 2-iteration epoch,
    with the epoch still to finish in its meta, and the pointer at it."""
    cfg = demo_config(tmp_path, coco_root, max_iters=2)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
    cfg.default_hooks.checkpoint.by_epoch = True
    runner = Runner.from_cfg(cfg)
    runner.register_hook(SignalDuring(1, signal.SIGUSR1))
    with pytest.raises(SystemExit) as stop:
        train(runner)
    assert stop.value.code == PREEMPTED_EXIT_CODE
    checkpoint = tmp_path / 'iter_1.pth'
    assert (tmp_path / 'last_checkpoint').read_text() == str(checkpoint)
    meta = parameters_and_meta(checkpoint)['meta']
    assert (meta['epoch'], meta['iter']) == (0, 1)
    assert not list(tmp_path.glob('epoch_*.pth'))


def test_signal_handlers_record_only_while_training(tmp_path):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        signals = PreemptionSignals(('SIGUSR1', ))
        os.kill(os.getpid(), signal.SIGUSR1)  # not training (e.g. tools/test.py): the old meaning
        assert received == [signal.SIGUSR1] and signals.received is None
        signals.armed = True
        os.kill(os.getpid(), signal.SIGUSR1)
        assert received == [signal.SIGUSR1] and signals.agreed() == signal.SIGUSR1
        signals.restore()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert received == [signal.SIGUSR1] * 2
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="bad_samples must be one of .* got 'ignore'"):
        FaultToleranceHook(bad_samples='ignore')
    with pytest.raises(ValueError, match="nonfinite_loss must be one of .* got 'zero'"):
        FaultToleranceHook(nonfinite_loss='zero')
    with pytest.raises(ValueError, match="unknown signal 'SIGFOO'"):
        FaultToleranceHook(signals=('SIGFOO', ))
