"""The package's registries.

Children of mmengine's root registries with their own scope, so a config written under mmdet's
or mmseg's default scope can say ``type='mmvitattn.InLinePVT'`` (models) or
``type='mmvitattn.CastlingAuxScheduleHook'`` (hooks), ``type='mmvitattn.CheckImageShape'``
(transforms) or ``constructor='mmvitattn.LayerDecayOptimWrapperConstructor'`` (optimizers).
``locations`` lets a registry import the modules that register into it the first time it is asked
for an entry.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS

# 'mmvitattn.models' (the data preprocessors) imports mmdet / mmseg, so it is loaded on first use.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmvitattn',
                  locations=['mmvitattn.backbones', 'mmvitattn.necks', 'mmvitattn.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmvitattn', locations=['mmvitattn.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='mmvitattn', locations=['mmvitattn.engine'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmvitattn',
                      locations=['mmvitattn.datasets.checks'])
