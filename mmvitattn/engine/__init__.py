"""Training-time machinery: hooks and the switch they drive."""
from .castling import CastlingAuxScheduleHook, set_castling_aux

__all__ = ['CastlingAuxScheduleHook', 'set_castling_aux']
