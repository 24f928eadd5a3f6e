"""Shared test setup."""
import pytest


@pytest.fixture(autouse=True)
def isolated_default_scope():
    """Tests that build mmdet/mmseg models set mmengine's default registry scope process-wide
    (``init_default_scope``); restore it afterwards so no test depends on which ran before it."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture(autouse=True)
def restore_sample_guard():
    """The fault hook wraps mmengine's ``BaseDataset.prepare_data`` process-wide (so that forked
    data loader workers inherit it); undo that after each test, so tests that expect a dataset's
    own exceptions do not depend on which test ran before them in the same worker."""
    from mmengine.dataset import BaseDataset

    from mmvitattn.datasets import guard
    saved_method, saved_state = BaseDataset.prepare_data, dict(guard._STATE)
    yield
    BaseDataset.prepare_data = saved_method
    guard._STATE.clear()
    guard._STATE.update(saved_state)
