"""Backbones are reachable from mmdet's and mmseg's registries as type='mmvitattn.<Name>'."""
import subprocess
import sys

import pytest
from mmengine.registry import DefaultScope, init_default_scope

import mmvitattn  # noqa: F401


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_scoped_type_builds_from_the_upstream_registry(scope):
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(dict(type='mmvitattn.InLinePVT', arch='t'))
    assert type(model).__name__ == 'InLinePVT'
    assert model.attention == ('inline', ) * 4
    assert DefaultScope.get_current_instance().scope_name == scope


@pytest.mark.parametrize('cfg, message', [
    (dict(type='mmvitattn.PVT', attention='linformer'), "unknown attention type 'linformer'"),
    (dict(type='mmvitattn.InLinePVT', num_heads=(2, 4, 7, 16)), 'num_heads=7 does not divide'),
])
def test_bad_configs_fail_at_build_time_through_the_registry(cfg, message):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    with pytest.raises(ValueError, match=message):
        MODELS.build(cfg)


def test_custom_imports_is_all_a_config_needs():
    """A fresh process that only evaluates a config's custom_imports can build our backbone."""
    code = (
        'from mmengine.config import Config\n'
        'from mmengine.utils import import_modules_from_strings\n'
        'from mmengine.registry import init_default_scope\n'
        "cfg = Config(dict(custom_imports=dict(imports=['mmvitattn'])))\n"
        'import_modules_from_strings(**cfg.custom_imports)\n'
        "init_default_scope('mmdet')\n"
        'from mmdet.registry import MODELS\n'
        "print(type(MODELS.build(dict(type='mmvitattn.CastlingPVT', arch='t'))).__name__)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith('CastlingPVT')
