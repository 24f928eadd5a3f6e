"""RNGStateHook: torch's random state travels in the checkpoint and is put back only on resume,
right before the first training iteration (after mmengine's data-loader replay)."""
from types import SimpleNamespace

import torch

from mmvitattn.engine import RNGStateHook
from mmvitattn.engine.rng import CHECKPOINT_KEY


def saved_checkpoint():
    torch.manual_seed(123)
    torch.rand(5)  # the state somewhere in the middle of a run
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(SimpleNamespace(), checkpoint)
    expected = torch.rand(5)  # what the uninterrupted run draws next
    return checkpoint, expected


def test_resume_restores_the_state_before_the_first_iteration():
    checkpoint, expected = saved_checkpoint()
    assert CHECKPOINT_KEY in checkpoint
    hook = RNGStateHook()
    torch.manual_seed(0)  # a resumed process starts from the config's seed
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), checkpoint)
    torch.rand(3)  # draws between loading and training (e.g. the data replay) do not matter
    hook.before_train_iter(SimpleNamespace(), batch_idx=2)
    assert torch.equal(torch.rand(5), expected)
    # Only once: later iterations keep drawing on.
    state = torch.get_rng_state()
    hook.before_train_iter(SimpleNamespace(), batch_idx=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_load_from_does_not_restore():
    checkpoint, expected = saved_checkpoint()
    hook = RNGStateHook()
    torch.manual_seed(0)
    hook.after_load_checkpoint(SimpleNamespace(_resume=False), checkpoint)
    hook.before_train_iter(SimpleNamespace(), batch_idx=0)
    assert not torch.equal(torch.rand(5), expected)


def test_checkpoint_without_state_resumes_as_before():
    hook = RNGStateHook()
    torch.manual_seed(0)
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), {})
    state = torch.get_rng_state()
    hook.before_train_iter(SimpleNamespace(), batch_idx=0)
    assert torch.equal(torch.get_rng_state(), state)
