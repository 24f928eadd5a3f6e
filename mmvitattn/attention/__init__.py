"""Token mixers behind one interface: ``mixer(x, hw, pad_mask=None)``; see ``base``."""
from .armour import ArmourAttention
from .base import ATTENTIONS, QKVMixer, TokenMixer, build_attention, register_attention
from .castling import CastlingAttention
from .cswin import CrossShapedWindowAttention
from .inline import InLineAttention
from .levit import LeViTAttention
from .softmax import SoftmaxAttention, SpatialReductionAttention
from .window import ShiftedWindowAttention

__all__ = [
    'ATTENTIONS', 'TokenMixer', 'QKVMixer', 'build_attention', 'register_attention',
    'ArmourAttention', 'CastlingAttention', 'CrossShapedWindowAttention', 'InLineAttention', 'LeViTAttention',
    'SoftmaxAttention',
    'SpatialReductionAttention', 'ShiftedWindowAttention'
]
