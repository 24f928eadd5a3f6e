"""Backbone families; each is one class taking its attention per stage/block from the config."""
from .cswin import CSwin, InLineCSwin, SoftmaxCSwin
from .levit import ArmourLeViT, ArmourPlusLeViT, LeViT
from .pvt import PVT, ArmourPVT, CastlingPVT, InLinePVT, SoftmaxPVT
from .swin import ArmourSwin, CastlingSwin, InLineSwin, SoftmaxSwin, Swin
from .vit import ArmourViT, CastlingViT, InLineViT, SoftmaxViT, ViT

__all__ = [
    'PVT', 'InLinePVT', 'CastlingPVT', 'ArmourPVT', 'SoftmaxPVT', 'ViT', 'InLineViT', 'CastlingViT', 'ArmourViT',
    'SoftmaxViT', 'CSwin', 'InLineCSwin', 'SoftmaxCSwin', 'Swin', 'InLineSwin', 'CastlingSwin', 'ArmourSwin',
    'SoftmaxSwin', 'LeViT', 'ArmourLeViT', 'ArmourPlusLeViT'
]
