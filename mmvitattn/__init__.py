"""Castling-ViT, InLine and Armour attention backbones for MMDetection and MMSegmentation.

Importing the package registers the backbones (``type='mmvitattn.<Name>'`` from any OpenMMLab
config) and makes mmengine read local checkpoint files with torch's safe loader.
"""
from . import attention, backbones  # noqa: F401
from .checkpoint import register_with_mmengine
from .registry import MODELS

__version__ = '0.1.0'
__all__ = ['MODELS', '__version__']

register_with_mmengine()
