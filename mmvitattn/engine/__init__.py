"""Training-time machinery: hooks, the switch they drive, optimizer constructors."""
from .castling import CastlingAuxScheduleHook, set_castling_aux
from .optim import LayerDecayOptimWrapperConstructor

__all__ = ['CastlingAuxScheduleHook', 'LayerDecayOptimWrapperConstructor', 'set_castling_aux']
