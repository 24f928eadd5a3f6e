"""Training-time machinery: hooks."""
from .castling import CastlingAuxScheduleHook
from .rng import RNGStateHook

__all__ = ['CastlingAuxScheduleHook', 'RNGStateHook']
