"""Data preprocessors that tell the backbone which pixels of a batch are padding.

mmdet and mmseg pad every image of a batch (to the batch's largest image, to a size divisor, or
to a fixed size) with zeros. Our backbones exclude padded pixels from attention and spatial
mixing when they know where they are. These subclasses of the stock preprocessors run the
parent's forward unchanged, then compute the (B, H, W) pixel mask (True = padding) from each
data sample's ``img_shape`` against the batch size and attach it to the returned ``inputs``
tensor (attribute ``PAD_MASK_ATTR``); the mask carries every image's real (h, w) (attribute
``PAD_SIZES_ATTR``, read by :func:`mmvitattn.padding.image_sizes`), so no backbone rebuilds the
sizes from the mask. Stock detectors and segmentors pass that same tensor
object to ``backbone(inputs)``, where :func:`mmvitattn.padding.resolve_pad_mask` reads it; no model code
changes. A batch without padding gets no mask, so it costs nothing. A tensor derived from
``inputs`` (a crop, a copy) carries no mask and the backbone then runs unmasked, as before.

Use in a config: ``model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskDetDataPreprocessor',
...))`` (mmdet) or ``type='mmvitattn.PadMaskSegDataPreProcessor'`` (mmseg); every other option
is the stock one's.
"""
from typing import Optional, Sequence

import torch

from ..padding import PAD_MASK_ATTR, PAD_SIZES_ATTR, attach_pad_mask, pad_mask_from_sizes  # noqa: F401
from ..registry import MODELS

__all__ = ['PadMaskDetDataPreprocessor', 'PadMaskSegDataPreProcessor', 'batch_pad_mask', 'PAD_MASK_ATTR']


def batch_pad_mask(inputs: torch.Tensor, data_samples: Optional[Sequence]) -> Optional[torch.Tensor]:
    """(B, H, W) pixel padding mask of a padded batch from its data samples' ``img_shape``
    (the image size before padding), carrying those sizes; None when nothing is padded or no
    sizes are known."""
    if not data_samples:
        return None
    if len(data_samples) != inputs.shape[0]:
        raise ValueError(f'{len(data_samples)} data samples for a batch of {inputs.shape[0]} images')
    sizes = []
    for i, sample in enumerate(data_samples):
        shape = sample.metainfo.get('img_shape') if hasattr(sample, 'metainfo') else None
        if shape is None:
            return None
        h, w = (int(v) for v in tuple(shape)[:2])
        if h > inputs.shape[-2] or w > inputs.shape[-1]:
            raise ValueError(f'data sample {i} has img_shape {(h, w)}, larger than the batch '
                             f'{tuple(inputs.shape[-2:])}; its metadata does not describe this batch')
        sizes.append((h, w))
    return pad_mask_from_sizes(tuple(inputs.shape[-2:]), sizes, device=inputs.device)


class _PadMaskMixin:
    """Attach the batch's pixel padding mask to the inputs after the stock preprocessing."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        inputs = data['inputs']
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            attach_pad_mask(inputs, batch_pad_mask(inputs, data.get('data_samples')))
        return data


try:
    from mmdet.models.data_preprocessors import DetDataPreprocessor
except ImportError:  # mmdet not installed: only the segmentation preprocessor is offered
    PadMaskDetDataPreprocessor = None
else:

    @MODELS.register_module()
    class PadMaskDetDataPreprocessor(_PadMaskMixin, DetDataPreprocessor):
        """mmdet's ``DetDataPreprocessor`` + the pixel padding mask on ``inputs`` (see module doc).
        Batch augments that resize the batch (e.g. ``BatchSyncRandomResize``) update
        ``img_shape``, so the mask follows them."""


try:
    from mmseg.models.data_preprocessor import SegDataPreProcessor
except ImportError:  # mmseg not installed
    PadMaskSegDataPreProcessor = None
else:

    @MODELS.register_module()
    class PadMaskSegDataPreProcessor(_PadMaskMixin, SegDataPreProcessor):
        """mmseg's ``SegDataPreProcessor`` + the pixel padding mask on ``inputs`` (see module doc).
        mmseg's ``stack_batch`` records each image's unpadded size as ``img_shape`` in training
        and, with ``test_cfg`` padding, at test time too; slide inference crops the tensor and so
        runs unmasked."""
