"""Checkpoint files are whole or absent; auto-resume passes over unreadable ones, naming them."""
import os
import time

import pytest
import torch

import mmvitattn  # noqa: F401  (routes mmengine's checkpoint writes through the atomic writer)
from mmvitattn.checkpoint import latest_resumable_checkpoint, save_checkpoint_atomically, write_atomically
from mmvitattn.checkpoint.atomic import remove_stale_temporaries


def training_checkpoint(step):
    return dict(meta=dict(iter=step, epoch=0), state_dict={'w': torch.full((3, ), float(step))})


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'iter_2.pth'
    save_checkpoint_atomically(training_checkpoint(2), str(path))
    before = path.read_bytes()

    def dies_half_way(f):
        f.write(b'half a checkpoint')
        raise KeyboardInterrupt  # e.g. the job is stopped during the save

    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(path), dies_half_way)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['iter_2.pth']


def test_mmengine_writes_through_the_atomic_writer(tmp_path):
    from mmengine.runner import checkpoint as mmengine_checkpoint
    from mmengine.runner import runner as mmengine_runner
    assert mmengine_runner.save_checkpoint is save_checkpoint_atomically  # what Runner.save_checkpoint calls
    mmengine_checkpoint.save_checkpoint(training_checkpoint(3), str(tmp_path / 'iter_3.pth'))
    assert torch.equal(torch.load(tmp_path / 'iter_3.pth')['state_dict']['w'], torch.full((3, ), 3.0))
    assert os.listdir(tmp_path) == ['iter_3.pth']


def write_run(work, steps, pointer_to):
    for i, step in enumerate(steps):
        path = work / f'iter_{step}.pth'
        save_checkpoint_atomically(training_checkpoint(step), str(path))
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))  # later steps are newer
    (work / 'last_checkpoint').write_text(str(work / f'iter_{pointer_to}.pth'))


def test_auto_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path):
    write_run(tmp_path, [2, 4, 6], pointer_to=6)
    assert latest_resumable_checkpoint(str(tmp_path)) == (str(tmp_path / 'iter_6.pth'), [])

    data = (tmp_path / 'iter_6.pth').read_bytes()
    (tmp_path / 'iter_6.pth').write_bytes(data[:len(data) // 2])  # a save cut short (no atomic writer)
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    path, skipped = latest_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_2.pth')
    assert [p for p, _ in skipped] == [str(tmp_path / 'iter_6.pth'), str(tmp_path / 'iter_4.pth')]
    assert all('could not read checkpoint' in why for _, why in skipped)


def test_an_empty_pointer_or_a_foreign_file_is_passed_over(tmp_path):
    write_run(tmp_path, [1, 2], pointer_to=2)
    (tmp_path / 'last_checkpoint').write_text('')  # killed while mmengine rewrote the pointer
    torch.save({'w': torch.zeros(1)}, tmp_path / 'iter_3.pth')  # newest, but no training state
    path, skipped = latest_resumable_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_2.pth')
    assert skipped[0] == (str(tmp_path / 'last_checkpoint'), 'the pointer file is empty')
    assert skipped[1][0] == str(tmp_path / 'iter_3.pth') and 'not a training checkpoint' in skipped[1][1]


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert latest_resumable_checkpoint(str(tmp_path)) == (None, [])


def test_temporaries_of_an_interrupted_save_are_removed(tmp_path):
    stale = tmp_path / '.iter_8.pth.0123456789abcdef0123456789abcdef.tmp'
    stale.write_bytes(b'partial')
    (tmp_path / 'notes.tmp').write_text('not ours')
    assert remove_stale_temporaries([str(tmp_path)]) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == ['notes.tmp']
