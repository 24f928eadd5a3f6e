"""The batch-padding protocol shared by data preprocessors, backbones and token mixers.

mmdet and mmseg pad every image of a batch at the bottom/right. Our data preprocessors attach the
(B, H, W) pixel mask (True = padding) to the batch tensor they return (:func:`attach_pad_mask`),
which stock models hand to ``backbone(inputs)``; :func:`resolve_pad_mask` reads and checks it.
Because padding is bottom/right, a mask is fully described by each image's real size, and a mask
made from sizes carries them (attribute ``PAD_SIZES_ATTR``: the preprocessors' masks and every
mask :func:`pad_mask_from_sizes` and :func:`downsample_pad_mask` make), so consumers read the sizes
(:func:`image_sizes`) instead of rebuilding them from the mask (:func:`real_sizes`, the fallback
for a mask given without them). After any stride ``s`` an image of real size (h, w) covers
``ceil(h / s) x ceil(w / s)`` positions (:func:`strided_size`, the one rule; :func:`downsample_pad_mask`).
:func:`tokens_to_map` turns tokens into the NCHW map a head reads, with padding zeroed.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

# Name of the attribute under which our data preprocessors attach the (B, H, W) pixel padding
# mask to the batch tensor they return. Stock detectors / segmentors hand that very tensor to
# ``backbone(inputs)``, so a backbone finds the mask there without any change to the model.
PAD_MASK_ATTR = 'mmvitattn_pad_mask'
# Name of the attribute under which a padding mask carries each image's real (h, w), a list.
PAD_SIZES_ATTR = 'mmvitattn_real_sizes'

Size = Tuple[int, int]


def attach_pad_mask(inputs: torch.Tensor, pad_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Attach (or, with None, clear) the pixel padding mask of a batch tensor; returns it."""
    setattr(inputs, PAD_MASK_ATTR, pad_mask)
    return inputs


def with_sizes(mask: Optional[torch.Tensor], sizes: Optional[Sequence[Size]]) -> Optional[torch.Tensor]:
    """Let ``mask`` carry each image's real (h, w) ``sizes`` (see :func:`image_sizes`); returns it."""
    if mask is not None and sizes is not None:
        setattr(mask, PAD_SIZES_ATTR, [(int(h), int(w)) for h, w in sizes])
    return mask


def carry_sizes(mask: Optional[torch.Tensor], source: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``mask`` (a reshape or slice of the same map's mask ``source``) carrying ``source``'s sizes."""
    return with_sizes(mask, getattr(source, PAD_SIZES_ATTR, None))


def image_sizes(pad_mask: torch.Tensor, hw: Optional[Size] = None) -> List[Size]:
    """Each image's real (h, w): the sizes the mask carries, else read off the mask (:func:`real_sizes`;
    ``hw``: the map of a token mask)."""
    sizes = getattr(pad_mask, PAD_SIZES_ATTR, None)
    return list(sizes) if sizes is not None else real_sizes(pad_mask, hw)


def pad_mask_from_sizes(batch_hw: Size, sizes: Sequence[Size], device=None) -> Optional[torch.Tensor]:
    """(B, H, W) mask, True outside each image's real top-left (h, w) region; None when no image
    of the batch is padded."""
    height, width = batch_hw
    sizes = [(int(h), int(w)) for h, w in sizes]
    for h, w in sizes:
        if not (0 < h <= height and 0 < w <= width):
            raise ValueError(f'valid image size {(h, w)} does not fit the batch size {(height, width)}')
    if all(s == (height, width) for s in sizes):
        return None
    valid = torch.tensor(sizes, device=device)
    rows = torch.arange(height, device=device)[None, :, None] >= valid[:, 0, None, None]
    cols = torch.arange(width, device=device)[None, None, :] >= valid[:, 1, None, None]
    return with_sizes(rows | cols, sizes)


def real_sizes(pad_mask: torch.Tensor, hw: Optional[Size] = None) -> List[Size]:
    """Each image's real (h, w) from a (B, H, W) mask, or from a (B, [prefix +] h*w) token mask
    of the map ``hw`` (prefix tokens, e.g. a cls token, are skipped)."""
    if hw is not None:
        pad_mask = pad_mask[:, pad_mask.shape[1] - hw[0] * hw[1]:].reshape(-1, *hw)
    real = ~pad_mask
    rows, cols = real.any(dim=2).sum(dim=1), real.any(dim=1).sum(dim=1)
    return [tuple(s) for s in torch.stack([rows, cols], dim=1).tolist()]


def strided_size(size: Size, stride: int) -> Size:
    """The real size after a stride, ceil(n / stride): every position that sees a real pixel is
    real. Written without negative operands: exported graphs (ONNX) truncate integer division."""
    return ((size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1)


def pad_to_multiple(x: torch.Tensor, pad_mask: Optional[torch.Tensor], stride: int):
    """Zero-pad images (B, C, H, W) at the bottom/right to a multiple of ``stride`` (as an image run
    alone is), and their pixel mask with it (the real sizes are unchanged); returns both."""
    extra_h, extra_w = -x.shape[2] % stride, -x.shape[3] % stride
    if extra_h or extra_w:
        x = F.pad(x, (0, extra_w, 0, extra_h))
        if pad_mask is not None:
            pad_mask = carry_sizes(F.pad(pad_mask, (0, extra_w, 0, extra_h), value=True), pad_mask)
    return x, pad_mask


def downsample_pad_mask(pad_mask: Optional[torch.Tensor], hw: Size, stride: int,
                        in_hw: Optional[Size] = None) -> Optional[torch.Tensor]:
    """A (B, H, W) mask (or a (B, H*W) token mask of the map ``in_hw``) -> the (B, h*w) token mask
    of the ``hw`` map a stride-``stride`` layer makes of it (:func:`strided_size`)."""
    if pad_mask is None:
        return None
    sizes = [strided_size(s, stride) for s in image_sizes(pad_mask, in_hw)]
    sizes = [(min(h, hw[0]), min(w, hw[1])) for h, w in sizes]
    mask = pad_mask_from_sizes(hw, sizes, pad_mask.device)
    if mask is None:
        mask = torch.zeros(pad_mask.shape[0], *hw, dtype=torch.bool, device=pad_mask.device)
    return with_sizes(mask.flatten(1), sizes)


def per_image(fn, tensors: Sequence[torch.Tensor], hw: Size, pad_mask: torch.Tensor) -> torch.Tensor:
    """``fn(*crops, (h, w))`` on each image's own real (top-left) part of (B, H*W, C) token maps,
    images of one real size together: what each image gets alone. Padded tokens' outputs are zero;
    the output has the width of the last tensor."""
    b = tensors[0].shape[0]
    out = tensors[-1].new_zeros(b, *hw, tensors[-1].shape[-1])
    groups = {}
    for i, size in enumerate(image_sizes(pad_mask, hw)):
        groups.setdefault(size, []).append(i)
    for (h, w), idx in groups.items():
        if h == 0 or w == 0:
            continue
        sel = torch.tensor(idx, device=out.device)
        crops = [t.reshape(b, *hw, -1)[sel, :h, :w].reshape(len(idx), h * w, -1) for t in tensors]
        out[sel, :h, :w] = fn(*crops, (h, w)).reshape(len(idx), h, w, -1).to(out.dtype)
    return out.reshape(b, hw[0] * hw[1], -1)


def zero_padded(tokens: torch.Tensor, token_pad: Optional[torch.Tensor]) -> torch.Tensor:
    """Tokens (B, N, C) with the padded ones (``token_pad`` (B, N)) set to zero; as they are without."""
    return tokens if token_pad is None else tokens * ~token_pad[..., None]


def tokens_to_map(tokens: torch.Tensor, hw: Size, token_pad: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, [prefix +] h*w, C) tokens -> a contiguous (B, C, h, w) map, prefix tokens dropped and
    padded positions zero; a padded map carries its (B, h, w) mask as ``PAD_MASK_ATTR``, which a
    neck reads (:class:`mmvitattn.necks.SimpleFeaturePyramid`). Contiguous NCHW: mmcv's CPU RoIAlign (and other NCHW ops) silently
    misread channels-last views."""
    b, n, c = tokens.shape
    grid = tokens[:, n - hw[0] * hw[1]:]
    if token_pad is None:
        return grid.transpose(1, 2).reshape(b, c, *hw).contiguous()
    grid_pad = token_pad[:, n - hw[0] * hw[1]:]
    out = zero_padded(grid, grid_pad).transpose(1, 2).reshape(b, c, *hw).contiguous()
    return attach_pad_mask(out, carry_sizes(grid_pad.reshape(b, *hw), token_pad))  # for a neck that needs it


def check_images(x: torch.Tensor, channels: Optional[int], owner: str) -> None:
    """Images must be (B, C, H, W) with ``channels`` channels: say so before any conv does."""
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f'{owner} expects images of shape (B, {channels or "C"}, H, W), got {tuple(x.shape)}')
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f'input of size {tuple(x.shape[2:])} is empty')


def resolve_pad_mask(x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None,
                     channels: Optional[int] = None, owner: str = 'the backbone') -> Optional[torch.Tensor]:
    """Check images ``x`` and return the pixel padding mask to use: the explicit one, else the
    one our data preprocessors attach to ``x``, else None. A mask without padding becomes None, so
    an unpadded batch takes exactly the unmasked path. Padding must be bottom/right (as mmdet and
    mmseg pad): each image's real pixels form a top-left rectangle."""
    check_images(x, channels, owner)
    attached = pad_mask is None
    if attached:
        pad_mask = getattr(x, PAD_MASK_ATTR, None)
        if pad_mask is None:
            return None
    expected = (x.shape[0], *x.shape[2:])
    if pad_mask.dim() != 3 or tuple(pad_mask.shape) != expected:
        source = 'the pad mask attached to the inputs' if attached else 'pad_mask'
        raise ValueError(f'{source} must have shape {expected} (B, H, W), got {tuple(pad_mask.shape)}')
    pad_mask = pad_mask.to(device=x.device, dtype=torch.bool)
    if attached:
        return pad_mask  # the preprocessor attaches a mask only to padded batches
    sizes = real_sizes(pad_mask)
    if any(h == 0 for h, _ in sizes):
        raise ValueError('pad_mask marks every pixel of an image as padding')
    rect = pad_mask_from_sizes(expected[1:], sizes, x.device)
    if not torch.equal(torch.zeros_like(pad_mask) if rect is None else rect, pad_mask):
        raise ValueError('pad_mask must mark bottom/right padding: the real pixels of each image '
                         'must form a top-left rectangle')
    return rect  # the same mask, carrying the sizes
