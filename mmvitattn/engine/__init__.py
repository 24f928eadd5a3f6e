"""Training-time machinery: hooks."""
from .castling import CastlingAuxScheduleHook

__all__ = ['CastlingAuxScheduleHook']
