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
