"""Training-time machinery: hooks, the switch they drive, optimizer constructors."""
from .castling import CastlingAuxScheduleHook, set_castling_aux
from .faults import PEER_LOST_EXIT_CODE, PREEMPTED_EXIT_CODE, FaultToleranceHook
from .nonfinite import NonFiniteLossError
from .optim import LayerDecayOptimWrapperConstructor
from .rng import RNGStateHook

__all__ = ['CastlingAuxScheduleHook', 'FaultToleranceHook', 'LayerDecayOptimWrapperConstructor', 'NonFiniteLossError',
           'PEER_LOST_EXIT_CODE', 'PREEMPTED_EXIT_CODE', 'RNGStateHook', 'set_castling_aux']
