"""Model-side helpers for stock mmdet / mmseg models (data preprocessors)."""
from .data_preprocessors import PadMaskDetDataPreprocessor, PadMaskSegDataPreProcessor, batch_pad_mask

__all__ = ['PadMaskDetDataPreprocessor', 'PadMaskSegDataPreProcessor', 'batch_pad_mask']
