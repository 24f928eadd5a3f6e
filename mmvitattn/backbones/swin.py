"""Swin-family hierarchical backbone with the token mixer chosen per stage or per block.

A 4x4 patch embedding, then four stages ``layers.{s}`` of ``blocks.{b}``; stages 0-2 end with a
patch merging ``layers.{s}.downsample`` (2x2 neighbours concatenated, LayerNorm, linear 4C -> 2C),
as in the official Swin and InLine-Swin checkpoints, whose parameter names this class keeps.

Each block's token mixer is either Swin's shifted-window softmax attention (``'swin_window'``,
letter ``S``: windows of ``window_size`` with a learned relative position bias, shifted by half a
window on odd blocks) or any registered global attention -- InLine (``I``), Castling (``C``),
Armour (``A``) or ``'softmax'`` -- applied to the whole stage map without shifting. InLine-Swin-T
is ``attention=('I', 'I', 'I', 'S')``; ``('I', 2)`` in a stage means "the first two blocks InLine,
the rest shifted windows" (InLine-Swin-B's third stage).

Window attention at run-time sizes (detection / segmentation maps are rarely square or multiples
of the window): the map is zero-padded at the bottom/right to a multiple of the window, then
cyclically shifted, and the shift mask is computed for that padded size (the order of the official
Swin detection code and mmdet). Along a dimension where the map is not larger than the window,
the window shrinks to the map and that dimension is not shifted; on square maps this is exactly
the official rule ``min(H, W) <= window -> window = min(H, W), no shift``. A shrunk window uses
the matching central part of the relative position table (the same learned bias per offset).

timm differences worth knowing (see :func:`convert_timm_swin`): timm puts each patch merging at the
start of the next stage (``layers.{s+1}.downsample``), names the classifier ``head.fc``, fixes each
block's window and shift when it is built (from ``img_size``), and, where a map is not a multiple
of the window, shifts *before* padding, so its windows there differ from the official / mmdet ones.
``attn_cfgs=dict(swin_window=dict(shift_first=True))`` reproduces timm's order; with it (or on maps
that are multiples of the window) our stage outputs equal timm's to float rounding.

Reference followed: Swin (microsoft/Swin-Transformer, ``models/swin_transformer.py``) and the
released InLine-Swin (LeapLabTHU/InLine, ``models/inline_swin.py`` with ``cfgs/inline_swin_*.yaml``):

- windows of the softmax blocks: the InLine configs set ``WINDOW_SIZE`` to the stage-1 map (56 at
  224, 96 at 384), which the InLine blocks use (one window per stage map: global), while the
  softmax blocks get ``max(7, WINDOW_SIZE // 8)``: 7 at 224 and 12 at 384 in every stage, the
  windows of Swin's own 224 and 384 models. So InLine-Swin-S/B run stage 3 (14 x 14 at 224) as
  2 x 2 shifted 7 x 7 windows with 13 x 13 relative-position tables, exactly as here; only where a
  map is no larger than the window (stage 4 at 224 and 384) is the window the whole map, unshifted.
  ``window_size=None`` applies this rule to ``pretrain_img_size``; a checkpoint's tables then load
  unchanged, and tables of another window (asked for with ``window_size``) are resized bicubically
  (``align_corners=False``, no antialias: Swin's ``load_pretrained``) and listed as resized in the
  load report.
- shift ``window // 2`` on odd blocks of a stage; InLine blocks never shift. At sizes the released
  classification code never ran (non-square maps, maps not a multiple of the window), windows are
  padded at run time as in Swin's detection code, and the "map no larger than the window" rule is
  applied per dimension (timm's rule; on square maps it is the official one).
- LayerNorm eps 1e-5 everywhere (PyTorch's default, as released); GELU MLPs; pre-norm blocks; drop
  path rising linearly over all blocks; patch merging after stages 1-3 (odd maps zero-padded, as the
  detection code); the classifier: final norm, token mean, head.
"""
import math
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import ATTENTIONS
from ..checkpoint.loading import drop_derived_buffers
from ..attention.window import (ShiftedWindowAttention, relative_position_index,  # noqa: F401
                                resize_relative_position_table, shifted_window_mask)
from ..registry import MODELS
from .attention_spec import mixer_options, resolve_attention, resolve_attn_cfgs
from ..padding import tokens_to_map, zero_padded
from .common import (BackboneBase, Block, PatchEmbed, check_out_indices, init_transformer_weights,
                     per_stage)

# --------------------------------------------------------------------------------------------
# Blocks, patch merging, the attention spec
# --------------------------------------------------------------------------------------------
class SwinBlock(Block):
    """The shared pre-norm block; also accepts (and drops) the official ``attn_mask`` buffer,
    which is computed at run time here for the actual map size."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + 'attn_mask', None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concatenate (in the official order (0,0), (1,0), (0,1), (1,1)
    as (row, col) offsets), LayerNorm(4C), Linear(4C, 2C, no bias). Odd maps are zero-padded."""

    def __init__(self, dim: int, out_dim: Optional[int] = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int], pad_mask: Optional[torch.Tensor] = None):
        """(B, H*W, C) tokens [+ (B, H*W) token mask] -> tokens, new (h, w), new token mask."""
        b, _, c = x.shape
        h, w = hw
        grid = x.reshape(b, h, w, c)
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        h2, w2 = (h + pad_h) // 2, (w + pad_w) // 2
        # (B, h2, 2[row], w2, 2[col], C) -> (B, h2, w2, col, row, C): flattening the last three
        # gives the official concatenation order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], ...
        merged = grid.reshape(b, h2, 2, w2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h2 * w2, 4 * c)
        out = self.reduction(self.norm(merged))
        if pad_mask is not None:
            m = pad_mask.reshape(b, h, w)
            if pad_h or pad_w:
                m = F.pad(m, (0, pad_w, 0, pad_h), value=True)
            pad_mask = m.reshape(b, h2, 2, w2, 2).all(dim=4).all(dim=2).reshape(b, h2 * w2)
        return out, (h2, w2), pad_mask


class SwinStage(nn.Module):
    """``blocks`` then an optional ``downsample`` (patch merging feeding the next stage)."""

    def __init__(self, blocks: nn.ModuleList, downsample: Optional[PatchMerging]):
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample


# --------------------------------------------------------------------------------------------
# Checkpoint conversion
# --------------------------------------------------------------------------------------------
def is_timm_layout(state_dict: Dict[str, torch.Tensor]) -> bool:
    """timm's Swin keeps each patch merging at the start of the next stage (no layers.0.downsample)."""
    has_downsample = any(re.match(r'layers\.\d+\.downsample\.', k) for k in state_dict)
    return (has_downsample and not any(k.startswith('layers.0.downsample.') for k in state_dict)) \
        or 'head.fc.weight' in state_dict


def convert_timm_swin(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ``SwinTransformer`` state dict -> the official layout used here: ``layers.{s}.downsample``
    -> ``layers.{s-1}.downsample``, ``head.fc`` -> ``head``; non-persistent buffers dropped."""
    out = {}
    for key, value in drop_derived_buffers(state_dict).items():
        key = re.sub(r'^layers\.(\d+)\.downsample\.',
                     lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', key)
        key = re.sub(r'^head\.fc\.', 'head.', key)
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------
SWIN_ARCHS = {
    't': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    's': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'b': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
# The released InLine-Swin attention layouts (InLine paper; released models of LeapLabTHU/InLine).
INLINE_SWIN_ATTENTION = {
    't': ('I', 'I', 'I', 'S'),
    's': ('I', 'I', 'S', 'S'),
    'b': ('I', 'I', ('I', 2), 'S'),
}


def released_window_size(pretrain_img_size: int, patch_size: int = 4) -> int:
    """The softmax-block window of the released (InLine-)Swin models trained at ``pretrain_img_size``:
    InLine-Swin's ``max(7, WINDOW_SIZE // 8)`` with ``WINDOW_SIZE`` the stage-1 map (7 at 224, 12 at 384,
    which are also Swin's own windows at those sizes)."""
    if not isinstance(pretrain_img_size, int) or pretrain_img_size < patch_size:
        raise ValueError(f'pretrain_img_size must be an int of at least patch_size={patch_size}, '
                         f'got {pretrain_img_size!r}')
    return max(7, (pretrain_img_size // patch_size) // 8)


@MODELS.register_module()
class Swin(BackboneBase):
    """Swin Transformer with the attention chosen per stage or per block.

    Args:
        arch: 't', 's' or 'b' (the released widths, depths and heads) or None to give
            ``embed_dims``, ``depths`` and ``num_heads`` yourself.
        attention: the grammar of :mod:`~mmvitattn.backbones.attention_spec`: e.g.
            ``attention='S'`` (plain Swin), ``attention='IIIS'`` (InLine-Swin-T, the same as
            ``attention=('I', 'I', 'I', 'S')``), ``attention=('I', 'I', ('I', 2), 'S')``
            (InLine-Swin-B), ``attention=('castling', 'castling', 'castling', 'swin_window')``.
            Letters: I = inline, S = swin_window, C = castling, A = armour. Global mixers see the
            whole stage map, unshifted; softmax / armour there are quadratic in the map size.
        attn_cfgs: mixer options, one dict for all blocks or one per stage (or block), e.g.
            ``attn_cfgs=dict(aux_softmax=True)`` or ``attn_cfgs=dict(castling=dict(aux_softmax=True))``:
            an option reaches every block whose mixer takes it.
        window_size: window of the 'swin_window' blocks, one for all stages or one per stage.
            None: the released models' window for ``pretrain_img_size``, ``max(7, (size / patch)
            // 8)``: 7 at 224, 12 at 384 (see the module docstring). Checkpoint tables of another
            window are resized on load (and reported as resized).
        pretrain_img_size: the ImageNet training size the default window is derived from.
        embed_dims: width of stage 0; patch merging doubles it per stage.
        out_norm: a LayerNorm ``out_norm{i}`` on every returned map (as mmdet's Swin). The
            ImageNet models have one final ``norm`` instead, built here when ``num_classes > 0``.
        num_classes: > 0 adds the final ``norm`` and a ``head`` (ImageNet logits via
            :meth:`forward_classifier`).
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix=None)`` loads an official
            (InLine-)Swin or timm Swin checkpoint through :meth:`load_pretrained`.
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate: the usual backbone
            options. Stage ``i`` is the patch embedding (``i == 0``) or the patch merging that
            feeds it (``layers.{i-1}.downsample``), its blocks and its ``out_norm{i}``.
    """
    default_attention = None
    num_stages = 4
    arch_zoo = SWIN_ARCHS
    family = 'Swin'

    def __init__(self, arch: Optional[str] = 't', attention=None, attn_cfgs: Optional[dict] = None,
                 embed_dims: Optional[int] = None, depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 window_size: Union[int, Sequence[int], None] = None, pretrain_img_size: int = 224,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, patch_size: int = 4, in_channels: int = 3,
                 drop_path_rate: float = 0.0, out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = False, num_classes: int = 0, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        n = self.num_stages
        sizes = self.resolve_arch(arch, dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads))
        embed_dims, depths, num_heads = sizes['embed_dims'], sizes['depths'], sizes['num_heads']
        if not isinstance(embed_dims, int) or embed_dims <= 0:
            raise ValueError(f'embed_dims must be a positive int (the stage-0 width), got {embed_dims!r}')
        depths = per_stage(depths, n, 'depths')
        num_heads = per_stage(num_heads, n, 'num_heads')
        if window_size is None:
            window_size = released_window_size(pretrain_img_size, patch_size)
        window_sizes = per_stage(window_size, n, 'window_size')
        if any(not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f'depths must be positive ints, got {depths!r}')
        self.check_frozen_stages(n - 1)
        if attention is None:
            attention = self.default_attention_for(arch)
        if attention is None:
            raise ValueError("Swin needs an attention spec, e.g. attention='IIIS' (InLine-Swin-T) or 'S'")
        block_attention = resolve_attention(attention, depths, ATTENTIONS, fill='swin_window', label='attention')
        block_cfgs = resolve_attn_cfgs(attn_cfgs, block_attention, ATTENTIONS)
        self.out_indices = check_out_indices(out_indices, n)
        self.embed_dims = tuple(embed_dims * 2**i for i in range(n))
        self.depths = depths
        self.block_attention = block_attention

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(n):
            dim = self.embed_dims[i]
            blocks = nn.ModuleList()
            for j, name in enumerate(block_attention[i]):
                defaults = dict(qkv_bias=qkv_bias, qkv_layout='qkv', window_size=window_sizes[i], shift=j % 2 == 1)
                cfg = mixer_options(name, defaults, block_cfgs[i][j])
                blocks.append(SwinBlock(dim, num_heads[i], name, mlp_ratio=mlp_ratio,
                                        drop_path=dpr[sum(depths[:i]) + j], attn_cfg=cfg))
            downsample = PatchMerging(dim) if i < n - 1 else None
            self.layers.append(SwinStage(blocks, downsample))
        self.out_norm = out_norm
        if out_norm:
            for i in self.out_indices:
                setattr(self, f'out_norm{i}', nn.LayerNorm(self.embed_dims[i]))
        self.num_classes = num_classes
        if num_classes > 0:
            self.norm = nn.LayerNorm(self.embed_dims[-1])
            self.head = nn.Linear(self.embed_dims[-1], num_classes)
        else:
            self.norm = self.head = None
        self._init_default_weights()
        self._freeze_stages()

    @classmethod
    def default_attention_for(cls, arch: Optional[str]):
        return cls.default_attention

    def _init_default_weights(self):
        """The official initialisation: truncated-normal linears, unit LayerNorms."""
        init_transformer_weights(self)

    # ---------------------------------------------------------------- checkpoints
    def convert_pretrained_state(self, state):
        """timm's Swin layout -> the official one used here; derived buffers are dropped."""
        state = convert_timm_swin(state) if is_timm_layout(state) else state
        return drop_derived_buffers(state)

    def resize_pretrained_tensor(self, key, tensor, shape):
        """A relative-position table of another window (e.g. the 384 models' 12) -> this window."""
        if not key.endswith('relative_position_bias_table') or tensor.dim() != 2 or tensor.shape[1] != shape[1]:
            return None
        window = (math.isqrt(shape[0]) + 1) // 2
        return resize_relative_position_table(tensor, window)

    def stage_modules(self, index: int):
        items = [self.patch_embed if index == 0 else self.layers[index - 1].downsample,
                 self.layers[index].blocks]
        if self.out_norm and index in self.out_indices:
            items.append(getattr(self, f'out_norm{index}'))
        return items

    def forward_stages(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Yield (tokens, (h, w), NCHW map to return) after every stage, in order."""
        tokens, hw, token_pad = self.patch_embed(x, pad_mask)
        for i, layer in enumerate(self.layers):
            if i:
                tokens, hw, token_pad = self.layers[i - 1].downsample(tokens, hw, token_pad)
            for block in layer.blocks:
                tokens = self.run_block(block, tokens, hw, token_pad)
            out = getattr(self, f'out_norm{i}')(tokens) if self.out_norm and i in self.out_indices \
                else tokens
            # Padded positions leave each stage as zeros: what patch merging pads with when the
            # image runs alone.
            tokens = zero_padded(tokens, token_pad)
            yield tokens, hw, tokens_to_map(out, hw, token_pad)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded] -> tuple of NCHW maps.

        Without ``pad_mask`` the mask our data preprocessors attach to ``x`` is used (if any). It
        reaches every block as a token mask: global mixers (InLine, Castling, Armour, softmax)
        leave padded tokens out of their sums and means, shifted-window blocks attend over each
        image's own map, and padded positions leave each stage as zeros (what patch merging pads
        with when the image runs alone), so an image gets the features it gets alone.
        """
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        return self.select_outputs(feat for _, _, feat in self.forward_stages(x, pad_mask))

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: last stage -> final norm -> mean over tokens -> head."""
        self.check_head()
        self.resolve_pad_mask(x)  # the input check of forward
        *_, (tokens, _, _) = self.forward_stages(x)
        return self.head(self.norm(tokens).mean(dim=1))


def _replace_letter(spec, old: str, new: str):
    if isinstance(spec, str):
        return new if spec == old else spec
    return tuple(_replace_letter(e, old, new) if not isinstance(e, int) else e for e in spec)


@MODELS.register_module()
class InLineSwin(Swin):
    """The released InLine-Swin layouts: T ('I','I','I','S'), S ('I','I','S','S'),
    B ('I','I',('I',2),'S'); InLine blocks global and unshifted."""
    global_letter = 'I'

    @classmethod
    def default_attention_for(cls, arch):
        if arch not in INLINE_SWIN_ATTENTION:
            raise ValueError(f'{cls.__name__} with arch={arch!r} needs an explicit attention spec')
        return _replace_letter(INLINE_SWIN_ATTENTION[arch], 'I', cls.global_letter)


@MODELS.register_module()
class CastlingSwin(InLineSwin):
    """InLine-Swin's layout with Castling linear-angular attention in place of InLine."""
    global_letter = 'C'


@MODELS.register_module()
class ArmourSwin(InLineSwin):
    """InLine-Swin's layout with global Armour (W_Q = W_V softmax) attention in place of InLine.
    Global softmax is quadratic in the stage map: mind the memory at detection sizes."""
    global_letter = 'A'


@MODELS.register_module()
class SoftmaxSwin(Swin):
    """The plain Swin Transformer (shifted windows everywhere): the softmax baseline."""
    default_attention = 'S'


__all__ = [
    'Swin', 'InLineSwin', 'CastlingSwin', 'ArmourSwin', 'SoftmaxSwin', 'ShiftedWindowAttention',
    'PatchMerging', 'convert_timm_swin', 'resize_relative_position_table',
    'released_window_size', 'relative_position_index', 'shifted_window_mask'
]
