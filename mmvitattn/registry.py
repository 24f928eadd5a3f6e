"""The package's model registry.

A child of mmengine's root MODELS registry with its own scope, so a config written under mmdet's
or mmseg's default scope can say ``type='mmvitattn.InLinePVT'``. ``locations`` lets the registry
import the modules that register models the first time it is asked for one.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmvitattn',
    locations=['mmvitattn.backbones'])
