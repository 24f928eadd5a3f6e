"""FLOP counting (``flops``) shared by the analysis tools and tests."""
from .flops import (SOFTMAX_PER_ELEMENT, STANDARD_SIZES, FlopCount, attention_op_handles, backbone_flops,
                    count_flops, flop_analyzer, format_flops, model_flops, parse_size, sdpa_flop_count,
                    tensor_forward)

__all__ = [
    'SOFTMAX_PER_ELEMENT', 'STANDARD_SIZES', 'FlopCount', 'attention_op_handles', 'backbone_flops',
    'count_flops', 'flop_analyzer', 'format_flops', 'model_flops', 'parse_size', 'sdpa_flop_count',
    'tensor_forward'
]
