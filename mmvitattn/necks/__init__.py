"""Necks for our backbones, registered in the ``mmvitattn`` scope."""
from .simple_pyramid import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid']
