import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import load_checkpoint

from mmvitattn.checkpoint import UnsafeCheckpointError, load_checkpoint_file


class RunsACommand:
    """What a malicious checkpoint hides: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def mmengine_like_checkpoint():
    return {
        'meta': {'epoch': 1, 'iter': 2, 'seed': np.int64(3),
                 'message_hub': {'log_scalars': {'train/loss': HistoryBuffer([1.0, 0.5], [1, 1])},
                                 'runtime_info': {'lr': np.float64(0.1), 'shape': np.arange(3)}}},
        'state_dict': {'weight': torch.arange(4.0)},
    }


def test_mmengine_objects_load_with_the_safe_loader_only(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save(mmengine_like_checkpoint(), path)
    loaded = load_checkpoint_file(str(path))
    assert torch.equal(loaded['state_dict']['weight'], torch.arange(4.0))
    buffer = loaded['meta']['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == 0.5
    np.testing.assert_array_equal(loaded['meta']['message_hub']['runtime_info']['shape'], np.arange(3))
    # The allow-list is scoped to our loads: torch's own default stays strict for everything else.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'payload': RunsACommand(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'refused to load .*evil\.pth.*system'):
        load_checkpoint_file(str(path))
    # mmengine's own loading path (resume, load_from, Pretrained init) goes through the same loader.
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(torch.nn.Linear(1, 1), str(path))
    assert not marker.exists()


def test_unsafe_loading_is_an_explicit_opt_in(tmp_path, monkeypatch):
    marker = tmp_path / 'ran'
    path = tmp_path / 'trusted.pth'
    torch.save({'payload': RunsACommand(marker)}, path)
    load_checkpoint_file(str(path), allow_unsafe=True)
    assert marker.exists()
    marker.unlink()
    monkeypatch.setenv('MMVITATTN_ALLOW_UNSAFE_PICKLE', '1')
    load_checkpoint_file(str(path))
    assert marker.exists()


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_checkpoint_file(str(tmp_path / 'nothere.pth'))
