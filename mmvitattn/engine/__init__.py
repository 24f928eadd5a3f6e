"""Training-time machinery: hooks, the switch they drive, optimizer constructors."""
from .castling import CastlingAuxScheduleHook, set_castling_aux
from .optim import LayerDecayOptimWrapperConstructor
from .rng import RNGStateHook

__all__ = ['CastlingAuxScheduleHook', 'LayerDecayOptimWrapperConstructor', 'RNGStateHook', 'set_castling_aux']
