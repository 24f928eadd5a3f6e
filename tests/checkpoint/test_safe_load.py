import os
import pickle
import sys

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


YACS_STAND_IN = '''
class CfgNode(dict):
    """Pickles like yacs' CfgNode: a dict subclass carrying flags in its __dict__."""
    def __init__(self, init_dict=None):
        super().__init__({k: CfgNode(v) if type(v) is dict else v for k, v in (init_dict or {}).items()})
        self.__dict__['__immutable__'] = True
        self.__dict__['__deprecated_keys__'] = set()
'''


def test_official_inline_style_checkpoint_loads_as_data(tmp_path, monkeypatch):
    """The official InLine files pickle a yacs config next to the weights; it loads as plain data
    without yacs being installed or any of its code running."""
    package = tmp_path / 'pkgs' / 'yacs'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'config.py').write_text(YACS_STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path / 'pkgs'))
    from yacs.config import CfgNode
    weights = {'blocks.0.attn.qkv.weight': torch.randn(6, 2), 'pos_embed': torch.randn(1, 5, 2)}
    path = tmp_path / 'inline_deit_t.pth'
    torch.save({'model': weights, 'config': CfgNode({'MODEL': {'TYPE': 'inline_deit', 'NUM_CLASSES': 1000}}),
                'optimizer': {'state': {}}, 'epoch': 299}, path)
    for name in ('yacs', 'yacs.config'):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, 'path', [p for p in sys.path if 'pkgs' not in p])

    loaded = load_checkpoint_file(str(path))
    assert 'yacs' not in sys.modules
    for key, tensor in weights.items():
        assert torch.equal(loaded['model'][key], tensor)
    assert loaded['config']['MODEL']['TYPE'] == 'inline_deit' and loaded['epoch'] == 299
    assert type(loaded['config']).__module__ == 'collections'
