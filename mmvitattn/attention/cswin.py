"""CSWin's cross-shaped window attention with LePE (Dong et al., CVPR 2022), registered as ``'cswin'``.

The heads are split in two halves: the first attends inside vertical stripes (the full map height,
``split_size`` columns wide), the second inside horizontal stripes (``split_size`` rows high, the
full map width); each branch adds LePE, a 3x3 depthwise conv (``get_v``) of V applied inside each
stripe. ``split_size=None``: one branch with all heads over the whole map (CSWin's last stage).
Stripes fit any map: the map is zero-padded up to a multiple of the stripe width at run time and
the result cropped back, the zeros centred and attended as the official CSWin segmentation code
does (``stripe_padding='center'``), or at the bottom/right and masked out (``'end'``). Batch
padding (``pad_mask``): stripes are laid over each image's own map, padded tokens are no keys and
zero in every LePE conv.

The CSwin family (``backbones/cswin.py``) keeps the released layout (block-level ``qkv`` / ``proj``,
branches in ``attns``) and calls :func:`cross_shaped_mix` itself; :class:`CrossShapedWindowAttention`
is the same mixing with its own projections, for any family.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..padding import per_image
from .base import QKVMixer, TokenMixer, check_heads, check_tokens, register_attention, split_heads

STRIPE_MODES = ('vertical', 'horizontal', 'global')
STRIPE_PADDINGS = ('center', 'end')


def window_padding(hw: Tuple[int, int], window: Tuple[int, int], center: bool) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) zeros that make an H x W map whole windows: split equally between
    both sides (``center``, the official CSWin segmentation code, top/left getting the smaller half)
    or all at the bottom/right."""
    pad_h, pad_w = -hw[0] % window[0], -hw[1] % window[1]
    top, left = (pad_h // 2, pad_w // 2) if center else (0, 0)
    return top, pad_h - top, left, pad_w - left


def to_windows(t: torch.Tensor, hw: Tuple[int, int], window: Tuple[int, int], center: bool = False) -> torch.Tensor:
    """(B, H*W, C) row-major map -> (B * windows, wh * ww, C); zero-padded up to whole windows
    (see :func:`window_padding`)."""
    b, _, c = t.shape
    h, w = hw
    wh, ww = window
    top, bottom, left, right = window_padding(hw, window, center)
    grid = t.reshape(b, h, w, c)
    if top or bottom or left or right:
        grid = F.pad(grid, (0, 0, left, right, top, bottom))
    nh, nw = (h + top + bottom) // wh, (w + left + right) // ww
    grid = grid.reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(b * nh * nw, wh * ww, c)


def from_windows(t: torch.Tensor, batch: int, hw: Tuple[int, int], window: Tuple[int, int],
                 center: bool = False) -> torch.Tensor:
    """Inverse of :func:`to_windows`, cropping the padding: -> (B, H*W, C)."""
    h, w = hw
    wh, ww = window
    top, bottom, left, right = window_padding(hw, window, center)
    # Not -(-h // wh): exported to ONNX, floor division of a negative size truncates instead.
    nh, nw = (h + top + bottom) // wh, (w + left + right) // ww
    c = t.shape[-1]
    grid = t.reshape(batch, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, nh * wh, nw * ww, c)
    return grid[:, top:top + h, left:left + w].reshape(batch, h * w, c)


class LePEAttention(nn.Module):
    """One CSWin branch: softmax attention inside stripes (or the whole map) plus LePE.

    Operates on already projected q, k, v of shape (B, H*W, dim) (this branch's channel share).
    ``mode``: 'vertical' (windows H x split_size), 'horizontal' (split_size x W) or 'global' (H x W).
    ``stripe_padding`` (maps that are not a multiple of the stripe width):

    - ``'center'`` (default; the official CSWin segmentation code): zeros added equally on both
      sides of the map (the stripes are centred on it) and attended as zero keys and values.
    - ``'end'``: zeros at the bottom/right and masked out of the softmax, so the last stripe is
      simply narrower.

    With batch padding an image is attended over its own real map (what it gets alone).
    """
    # The CSwin family's blocks call these branches without the registered mixer: they are its mixing.
    attention_name = 'cswin'

    def __init__(self, dim: int, num_heads: int, mode: str, split_size: Optional[int] = None,
                 stripe_padding: str = 'center'):
        super().__init__()
        if mode not in STRIPE_MODES:
            raise ValueError(f'unknown stripe mode {mode!r}; expected one of {STRIPE_MODES}')
        if mode != 'global' and (not isinstance(split_size, int) or split_size < 1):
            raise ValueError(f'{mode} stripes need a positive int split_size, got {split_size!r}')
        if stripe_padding not in STRIPE_PADDINGS:
            raise ValueError(f'unknown stripe_padding {stripe_padding!r}; expected one of {STRIPE_PADDINGS}')
        self.center = stripe_padding == 'center'
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.mode = mode
        self.split_size = split_size
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def window_shape(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        h, w = hw
        if self.mode == 'vertical':
            return h, self.split_size
        if self.mode == 'horizontal':
            return self.split_size, w
        return h, w

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pad_mask is not None and self.center and self.mode != 'global':
            # Centred stripes depend on the map size: lay them over each image's own map.
            return per_image(self.attend, (q, k, v), hw, pad_mask)
        return self.attend(q, k, v, hw, pad_mask)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Tuple[int, int],
               pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = q.shape
        window = self.window_shape(hw)
        wh, ww = window
        masked_pad = not self.center and ((-hw[0] % wh) or (-hw[1] % ww))
        key_ok = None
        if pad_mask is not None or masked_pad:
            real = q.new_ones(b, n, 1) if pad_mask is None else (~pad_mask).to(q.dtype).unsqueeze(-1)
            v = v * real if pad_mask is not None else v  # LePE sees zeros where there is no token
            key_ok = to_windows(real, hw, window)[..., 0] > 0.5  # (B', L)
            # A window made only of padding: let it attend to itself; its queries are discarded
            # (cropped or padded tokens), and this keeps NaN out of the padded positions.
            key_ok = key_ok | ~key_ok.any(dim=-1, keepdim=True)
            key_ok = key_ok[:, None, None, :]
        qw, kw, vw = (to_windows(t, hw, window, self.center) for t in (q, k, v))
        nwin = vw.shape[0]
        lepe = self.get_v(vw.transpose(1, 2).reshape(nwin, c, wh, ww)).reshape(nwin, c, wh * ww)
        y = F.scaled_dot_product_attention(split_heads(qw, self.num_heads), split_heads(kw, self.num_heads),
                                           split_heads(vw, self.num_heads), attn_mask=key_ok)
        y = TokenMixer.merge_heads(y) + lepe.transpose(1, 2)
        return from_windows(y, b, hw, window, self.center)

    def extra_repr(self) -> str:
        split = '' if self.mode == 'global' else f', split_size={self.split_size}'
        padding = '' if self.center else ", stripe_padding='end'"
        return f'dim={self.dim}, num_heads={self.num_heads}, mode={self.mode}{split}{padding}'


def stripe_branches(dim: int, num_heads: int, split_size: Optional[int],
                    stripe_padding: str = 'center') -> nn.ModuleList:
    """The branches ``attns``: vertical + horizontal stripes on half the heads each, or one
    global branch with ``split_size=None``."""
    if split_size is None:
        return nn.ModuleList([LePEAttention(dim, num_heads, 'global', stripe_padding=stripe_padding)])
    if num_heads % 2:
        raise ValueError(f'stripe attention splits the heads into two halves; num_heads={num_heads} '
                         f'(width {dim}) must be even, or use split_size=None')
    return nn.ModuleList([LePEAttention(dim // 2, num_heads // 2, mode, split_size, stripe_padding)
                          for mode in ('vertical', 'horizontal')])


def cross_shaped_mix(branches: nn.ModuleList, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     hw: Tuple[int, int], pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Projected q, k, v (B, H*W, C) -> (B, H*W, C): the first half of the channels through the
    first branch, the second half through the second (or all through a single branch)."""
    if len(branches) == 1:
        return branches[0](q, k, v, hw, pad_mask)
    half = q.shape[-1] // 2
    return torch.cat([branch(q[..., s], k[..., s], v[..., s], hw, pad_mask)
                      for branch, s in zip(branches, (slice(None, half), slice(half, None)))], dim=-1)


@register_attention('cswin')
class CrossShapedWindowAttention(QKVMixer):
    """CSWin attention as a token mixer with its own projections: stripes of ``split_size``
    (7, CSWin's third-stage width at 224; None: the whole map), padded by ``stripe_padding``
    (see :class:`LePEAttention`), on a plain token map."""
    takes_prefix_tokens = False

    def __init__(self, dim: int, num_heads: int, split_size: Optional[int] = 7, stripe_padding: str = 'center',
                 qkv_bias: bool = True, qkv_layout: str = 'qkv', proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, qkv_layout=qkv_layout, proj_drop=proj_drop)
        self.attns = stripe_branches(dim, num_heads, split_size, stripe_padding)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if check_tokens(x, hw, pad_mask):
            raise ValueError('cswin attention takes a plain token map without prefix tokens')
        q, k, v = self.project_tokens(x)
        return self.output(cross_shaped_mix(self.attns, q, k, v, hw, pad_mask))
