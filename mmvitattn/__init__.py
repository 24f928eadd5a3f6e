"""Castling-ViT, InLine and Armour attention backbones for MMDetection and MMSegmentation.

Importing the package registers the backbones (``type='mmvitattn.<Name>'`` from any OpenMMLab
config) and their ImageNet classifiers with timm (``timm.create_model('inline_pvt_t')``), makes
mmengine read local checkpoint files with torch's safe loader, gives the mmcv ops our configs
use a torchvision / plain-torch implementation on devices where mmcv has no kernel (``mmvitattn.ops``),
and lets configs inherit ours as ``_base_ = 'mmvitattn::<task>/<config>.py'`` (see :mod:`mmvitattn.mim`).
"""
from . import attention, backbones, necks  # noqa: F401
from .checkpoint import register_with_mmengine
from .mim import config_path, register_config_scope
from .ops import install_fallbacks
from .registry import MODELS
from .timm_models import register_with_timm

__version__ = '0.1.0'
__all__ = ['MODELS', '__version__', 'config_path']

register_with_mmengine()
register_with_timm()
install_fallbacks()
register_config_scope()
