from .pvt import PVT, ArmourPVT, CastlingPVT, InLinePVT, SoftmaxPVT

__all__ = ['PVT', 'InLinePVT', 'CastlingPVT', 'ArmourPVT', 'SoftmaxPVT']
