"""Training-time machinery: hooks and the switch they drive."""
from .castling import CastlingAuxScheduleHook, set_castling_aux
from .rng import RNGStateHook

__all__ = ['CastlingAuxScheduleHook', 'RNGStateHook', 'set_castling_aux']
