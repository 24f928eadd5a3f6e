"""LeViT (Graham et al., ICCV 2021) and its Armour generalizations as dense-prediction backbones.

Structure (as in the paper and timm's ``levit_*`` linear-mode models):

* stem: four stride-2 3x3 conv + BatchNorm layers with Hardswish between them (stride 16);
* three stages of residual blocks ``x + attn(x)``, ``x + mlp(x)`` whose layers are all
  "BN-linear" (a bias-free linear followed by BatchNorm over channels); stage 2 and 3 start with a
  shrinking attention block that subsamples the queries by 2 (stride 32, 64) and widens the map;
* LeViT attention: q, k with ``key_dim`` channels per head, v with ``attn_ratio * key_dim``,
  softmax(s q k^T + B) v, Hardswish, then a BN-linear projection. B is a learned per-head bias
  indexed by the absolute offset (|dy|, |dx|) between query and key positions.

Attention per stage (``attention=`` one name, or one per stage; the Armour paper's LeViT variants):
``'softmax'`` (LeViT), ``'armour'`` (v = [q | v_own], Armour-LeViT) and ``'armour_plus'`` (v = [q | k],
Armour+-LeViT) are the forms of the registered ``'levit'`` mixer (:mod:`mmvitattn.attention.levit`,
where the attention-bias resizing is described), built with this model's ``key_dim``; any other
registered mixer runs in a stage too (see :class:`LeViTBlock`). The shrinking attention blocks are
LeViT's in every variant. With the 1000-class head and LeViT's distillation head these readings
reproduce the Armour paper's parameter counts (7.76 / 7.47 / 7.18M for 128S, ...; see the tests).

Reference followed: facebookresearch/LeViT ``levit.py`` and timm's ``levit.py`` (equality with
timm is tested): BatchNorm eps 1e-5 (PyTorch's default) in every BN-linear / BN-conv; Hardswish
activations; the last BatchNorm of each residual branch starting at zero; drop path at one rate
(``drop_path_rate``) on every residual branch; queries subsampled at even positions (a 7 x 7 map gives 4 x 4); the classifier on the
token mean (BatchNorm1d + linear, averaged with the distillation head). Neither the released code
nor timm runs another input size, and no official LeViT detection code exists, so the rule below
for other sizes is this project's.

Outputs (``out_indices``) are numbered by stride:

=====  ======  =================================  ==================
level  stride  tensor                             channels
=====  ======  =================================  ==================
0      4       stem, after conv2 + Hardswish      embed_dims[0] // 4
1      8       stem, after conv3 + Hardswish      embed_dims[0] // 2
2      16      stage 1                            embed_dims[0]
3      32      stage 2                            embed_dims[1]
4      64      stage 3                            embed_dims[2]
=====  ======  =================================  ==================

The default ``(2, 3, 4)`` gives the three stage maps (UperNet / 3-level necks); ``(0, 1, 2, 3, 4)``
or ``(1, 2, 3, 4)`` feed a 5- or 4-input FPN. Inputs are zero-padded on the bottom/right up to a
multiple of 16; the stride-32/64 maps are ``ceil`` of half the previous one (LeViT subsamples
queries at even positions). ``frozen_stages``: 0 freezes the stem, k >= 1 the stem and the first k
stages.

Batch padding (``pad_mask``): the stem zeroes every conv's input beyond each image's own
(16-rounded) extent, padded tokens are no keys, each image's attention bias is made for its own
key grid, and padded positions of the returned maps are zero, so in eval mode an image gets the
features it gets alone. In training mode BatchNorm's batch statistics still include padded
positions (as any BatchNorm backbone's do).

Attribute names follow timm's linear-mode ``levit_*`` models, so their state dicts load after
:func:`convert_levit_checkpoint`, which also reads timm's conv-mode ``levit_conv_*`` and the
official facebookresearch/LeViT layouts.
"""
import contextlib
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from ..attention import ATTENTIONS
from ..attention.levit import (ATTN_BIAS_MODES, LEVIT_ATTENTIONS, BNLinear, LeViTAttention,  # noqa: F401
                               resize_offset_table)
from ..checkpoint.levit import convert_levit_checkpoint  # noqa: F401
from ..padding import downsample_pad_mask, image_sizes, pad_to_multiple, strided_size, tokens_to_map, with_sizes
from ..registry import MODELS
from .attention_spec import constructor_options, mixer_options, resolve_attention, resolve_attn_cfgs, stage_summary
from .common import BackboneBase, check_out_indices, per_stage
from .levit_layers import (BNConv, BNHead, LeViTBlock, LeViTShrinkBlock, LeViTStage, LeViTStem,  # noqa: F401
                           keep_bn_statistics)

# The released LeViT sizes (key_dim is shared by every attention of a model).
LEVIT_ARCHS = {
    '128s': dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depths=(2, 3, 4)),
    '128': dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 8, 12), depths=(4, 4, 4)),
    '192': dict(embed_dims=(192, 288, 384), key_dim=32, num_heads=(3, 5, 6), depths=(4, 4, 4)),
    '256': dict(embed_dims=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depths=(4, 4, 4)),
    '384': dict(embed_dims=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depths=(4, 4, 4)),
}
_VARIANT_PREFIXES = {'levit': 'softmax', 'armour-levit': 'armour', 'armour-plus-levit': 'armour_plus'}
# 'levit-128s', 'armour-levit-192', 'armour-plus-levit-384', ...
LEVIT_VARIANTS = {f'{prefix}-{arch}': (arch, attention)
                  for prefix, attention in _VARIANT_PREFIXES.items() for arch in LEVIT_ARCHS}
STEM_STRIDE = 16


def levit_mixer_options(name: str):
    """Options a LeViT block's mixer takes from ``attn_cfgs``: none for LeViT's own forms."""
    return frozenset() if name in LEVIT_ATTENTIONS else constructor_options(name)

NUM_LEVELS = 5  # two stem maps + three stages
LEVEL_STRIDES = (4, 8, 16, 32, 64)


def _pair(value) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# --------------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------------
@MODELS.register_module()
class LeViT(BackboneBase):
    """LeViT backbone with its biased softmax, Armour, or any registered attention per stage.

    Args:
        arch: '128s', '128', '192', '256' or '384' (the released sizes), or None with explicit
            ``embed_dims``/``key_dim``/``num_heads``/``depths``. Given with an arch, any of
            those four overrides the arch's value (e.g. reduced ``depths`` for tests).
        variant: a full model name instead of ``arch`` + ``attention``: 'levit-128s',
            'armour-levit-256', 'armour-plus-levit-384', ... (see ``LEVIT_VARIANTS``). It replaces
            the default arch; a different explicit arch or attention is an error.
        attention: 'softmax', 'armour' or 'armour_plus' (LeViT's attention-biased forms), or any
            other registered mixer ('inline', 'castling', ...; see :class:`LeViTBlock`), for
            every stage or one per stage (or block): the grammar of
            :mod:`~mmvitattn.backbones.attention_spec`. The shrinking blocks stay LeViT's.
        attn_cfgs: options of the registered mixers, one dict for all stages or one per stage
            (or block), e.g. ``attn_cfgs=dict(aux_softmax=True)`` for 'castling'; LeViT's own forms take
            none (``attn_ratio``, ``attn_bias_mode`` set them).
        attn_ratio / mlp_ratio: value ratio and MLP ratio of the residual blocks (per stage; 2, 2).
        down_attn_ratio / down_mlp_ratio: the same for the shrinking blocks (4, 2).
        pretrain_img_size: the input size the attention-bias tables are trained for (224).
        attn_bias_mode: 'interpolate' (resize the tables to the run-time grid) or 'clamp'.
        zero_init_residual: start the BN at the end of every residual branch (attention ``proj``,
            MLP ``ln2``) at zero, as LeViT does, so blocks start as identities. Only matters when
            training from scratch; with it the first optimizer step only reaches those BNs.
        out_indices: output levels 0..4 (strides 4, 8, 16, 32, 64; see the module docstring).
        out_norm: a LayerNorm over channels on every returned map (``out_norms.<level>``).
        num_classes: > 0 adds LeViT's BN-linear ImageNet head (``head``), and with
            ``distillation=True`` its distillation head (``head_dist``); ``forward_classifier``
            then returns the average of the two, as LeViT does at inference.
        frozen_stages: -1 none, 0 the stem, k the stem and the first k stages.
        norm_eval, with_cp, drop_path_rate, init_cfg: the usual backbone options. ``init_cfg=
            dict(type='Pretrained', checkpoint=path)`` reads timm or official LeViT checkpoints
            through :func:`convert_levit_checkpoint`.
    """
    default_attention: Optional[str] = None
    num_stages = 3
    arch_zoo = LEVIT_ARCHS
    family = 'LeViT'
    DEFAULT_ARCH = '128s'

    def __init__(self, arch: Optional[str] = '128s', variant: Optional[str] = None,
                 attention: Union[str, Sequence[str], None] = None,
                 attn_cfgs: Union[dict, Sequence[dict], None] = None,
                 embed_dims: Optional[Sequence[int]] = None, key_dim: Optional[int] = None,
                 num_heads: Optional[Sequence[int]] = None, depths: Optional[Sequence[int]] = None,
                 attn_ratio: Union[float, Sequence[float]] = 2.0,
                 mlp_ratio: Union[float, Sequence[float]] = 2.0, down_attn_ratio: float = 4.0,
                 down_mlp_ratio: float = 2.0, in_channels: int = 3,
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224, attn_bias_mode: str = 'interpolate',
                 drop_path_rate: float = 0.0, zero_init_residual: bool = True,
                 out_indices: Sequence[int] = (2, 3, 4), out_norm: bool = False,
                 num_classes: int = 0, distillation: bool = True, drop_rate: float = 0.0,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        arch, attention = self._resolve_variant(variant, arch, attention)
        sizes = self.resolve_arch(arch, dict(embed_dims=embed_dims, key_dim=key_dim, num_heads=num_heads,
                                             depths=depths))
        embed_dims, key_dim, num_heads, depths = (sizes[k] for k in ('embed_dims', 'key_dim', 'num_heads', 'depths'))
        if not isinstance(key_dim, int) or key_dim <= 0:
            raise ValueError(f'key_dim must be a positive int, got {key_dim!r}')
        if min(_pair(pretrain_img_size)) < STEM_STRIDE:
            raise ValueError(f'pretrain_img_size={pretrain_img_size!r} is smaller than the stem stride '
                             f'{STEM_STRIDE}; the attention-bias tables need at least one token')
        n = self.num_stages
        embed_dims = per_stage(embed_dims, n, 'embed_dims')
        num_heads = per_stage(num_heads, n, 'num_heads')
        depths = per_stage(depths, n, 'depths')
        attn_ratio = per_stage(attn_ratio, n, 'attn_ratio')
        mlp_ratio = per_stage(mlp_ratio, n, 'mlp_ratio')
        for i, depth in enumerate(depths):
            if not isinstance(depth, int) or depth < 0:
                raise ValueError(f'depths[{i}]={depth!r} must be an int >= 0')
        known = sorted(set(LEVIT_ATTENTIONS) | set(ATTENTIONS))
        block_attention = resolve_attention(attention, depths, known, owner=type(self).__name__,
                                            label='LeViT attention')
        block_cfgs = resolve_attn_cfgs(attn_cfgs, block_attention, known, options=levit_mixer_options)
        if embed_dims[0] % 8:
            raise ValueError(f'the stem halves the width three times: embed_dims[0]={embed_dims[0]} '
                             'must be a multiple of 8')
        if attn_bias_mode not in ATTN_BIAS_MODES:
            raise ValueError(f'unknown attn_bias_mode {attn_bias_mode!r}; expected one of {ATTN_BIAS_MODES}')
        self.check_frozen_stages(n, ' (0 = stem, k = stem and the first k stages)')
        self.out_indices = check_out_indices(out_indices, NUM_LEVELS)
        if not self.out_indices:
            raise ValueError('out_indices is empty; expected one or more levels from 0..4')
        self.embed_dims = embed_dims
        self.attention = stage_summary(block_attention)
        self.key_dim = key_dim
        self.out_channels = (embed_dims[0] // 4, embed_dims[0] // 2, *embed_dims)
        self.out_strides = LEVEL_STRIDES

        out_bn_init = 0.0 if zero_init_residual else 1.0
        self.stem = LeViTStem(in_channels, embed_dims[0])
        grid = tuple(s // STEM_STRIDE for s in _pair(pretrain_img_size))
        num_blocks = sum(depths) + (n - 1)  # the shrink blocks' MLPs are residual too
        dpr = iter([drop_path_rate] * num_blocks)  # LeViT's Residual: one rate for every branch
        stages = []
        for i in range(n):
            down = None
            if i > 0:
                down = LeViTShrinkBlock(embed_dims[i - 1], embed_dims[i], key_dim, down_attn_ratio,
                                        down_mlp_ratio, grid, attn_bias_mode, next(dpr), out_bn_init)
                grid = strided_size(grid, 2)
            # A registered 'levit' mixer in a stage gets this model's key width, grid and bias rule;
            # any other mixer LeViT's BN-linear projections.
            defaults = dict(key_dim=key_dim, resolution=grid, bias_mode=attn_bias_mode, qkv_layout='bn_qkv')
            blocks = [LeViTBlock(embed_dims[i], key_dim, num_heads[i], attn_ratio[i], mlp_ratio[i], name, grid,
                                 attn_bias_mode, next(dpr), out_bn_init,
                                 mixer_options(name, defaults, cfg, options=levit_mixer_options))
                      for name, cfg in zip(block_attention[i], block_cfgs[i])]
            stages.append(LeViTStage(down, blocks))
        self.stages = nn.ModuleList(stages)

        self.out_norm = out_norm
        if out_norm:
            self.out_norms = nn.ModuleDict({str(i): nn.LayerNorm(self.out_channels[i]) for i in self.out_indices})
        self.num_classes = num_classes
        self.head = BNHead(embed_dims[-1], num_classes, drop_rate) if num_classes > 0 else None
        self.head_dist = BNHead(embed_dims[-1], num_classes, drop_rate) if num_classes > 0 and distillation \
            else None
        self._freeze_stages()

    def _resolve_variant(self, variant, arch, attention):
        default = self.default_attention
        if variant is not None:
            if variant not in LEVIT_VARIANTS:
                raise ValueError(f'unknown LeViT variant {variant!r}; expected one of {sorted(LEVIT_VARIANTS)}')
            v_arch, v_attention = LEVIT_VARIANTS[variant]
            if arch not in (LeViT.DEFAULT_ARCH, v_arch):  # the default arch yields to the variant
                raise ValueError(f'variant={variant!r} is arch {v_arch!r}, but arch={arch!r} was given')
            if default is not None and default != v_attention:
                raise ValueError(f'{type(self).__name__} uses {default!r} attention; variant {variant!r} '
                                 f'uses {v_attention!r} (build it with LeViT)')
            if attention is not None and attention != v_attention:
                raise ValueError(f'variant={variant!r} uses {v_attention!r} attention, but '
                                 f'attention={attention!r} was given')
            return v_arch, v_attention
        return arch, attention or default or 'softmax'

    # --- backbone conventions ----------------------------------------------------------------------
    def _levels_of(self, index: int):
        return (0, 1) if index == 0 else (index + 1, )

    def stage_modules(self, index: int):
        items = [self.stem] if index == 0 else [self.stages[index - 1]]
        if self.out_norm:
            items += [self.out_norms[str(i)] for i in self._levels_of(index) if str(i) in self.out_norms]
        return items

    def run_block(self, block: nn.Module, x: torch.Tensor, hw, pad_mask):
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(block, x, hw, pad_mask, use_reentrant=False,
                                 context_fn=lambda: (contextlib.nullcontext(), keep_bn_statistics(block)))
        return block(x, hw, pad_mask)

    def convert_pretrained_state(self, state):
        """timm / official LeViT layouts -> ours (:func:`convert_levit_checkpoint`); the loader then
        warm-starts Armour attentions from a softmax checkpoint (``warm_start_armour``)."""
        return convert_levit_checkpoint(state, self)

    def resize_pretrained_tensor(self, key, tensor, shape):
        """Attention biases trained on another (square) grid -> this model's grid."""
        if not key.endswith('attention_biases') or tensor.dim() != 2 or tensor.shape[0] != shape[0]:
            return None
        side = math.isqrt(tensor.shape[1])
        if side * side != tensor.shape[1]:
            return None
        module = self.get_submodule(key.rsplit('.', 1)[0])
        table = resize_offset_table(tensor.view(tensor.shape[0], side, side), module.resolution, 'interpolate')
        return table.reshape(shape)

    # --- forward -----------------------------------------------------------------------------------
    def _emit(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Level output: the NCHW map with out_norm applied, contiguous."""
        if self.out_norm:
            x = self.out_norms[str(level)](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        # mmcv's CPU RoIAlign (and other NCHW ops) silently misread channels-last views.
        return x.contiguous()

    def forward_levels(self, x: torch.Tensor, last_level: int = NUM_LEVELS - 1,
                       pad_mask: Optional[torch.Tensor] = None):
        """Run up to ``last_level``; return the final tokens, their grid and {level: output map}."""
        x, pad_mask = pad_to_multiple(x, pad_mask, STEM_STRIDE)
        outs = {}
        if pad_mask is None:
            x, stem_maps = self.stem(x)
            token_pad = None
        else:
            x, stem_maps, token_pad = self.masked_stem(x, pad_mask)
        for level, m in enumerate(stem_maps):
            if level in self.out_indices:
                outs[level] = self._emit(level, m)
        hw = (x.shape[2], x.shape[3])
        tokens = x.flatten(2).transpose(1, 2)
        for i, stage in enumerate(self.stages):
            if i + 2 > last_level:
                break
            if i > 0:
                tokens = self.run_block(stage.downsample, tokens, hw, token_pad)
                new_hw = stage.downsample.attn_downsample.out_hw(hw)
                token_pad = downsample_pad_mask(token_pad, new_hw, 2, in_hw=hw)  # queries on even rows/columns
                hw = new_hw
            for block in stage.blocks:
                tokens = self.run_block(block, tokens, hw, token_pad)
            if i + 2 in self.out_indices:
                outs[i + 2] = self._emit(i + 2, tokens_to_map(tokens, hw, token_pad))
        return tokens, hw, outs

    def masked_stem(self, x: torch.Tensor, pad_mask: torch.Tensor):
        """The stem for a padded batch. Alone, an image is zero-padded to a multiple of 16 and
        those zeros are part of its input, so its stem-valid region is its size rounded up to 16;
        beyond it, each conv's input must be zero (the conv's own zero padding alone). Returns the
        stride-16 map, the stride-4/8 maps (zero beyond the valid region) and the token mask."""
        sizes = [strided_size(s, STEM_STRIDE) for s in image_sizes(pad_mask)]  # the token grids
        rows, cols = (torch.tensor(s, device=x.device) * STEM_STRIDE for s in zip(*sizes))
        stem = self.stem
        maps = []
        for i in range(4):
            x = getattr(stem, f'conv{i + 1}')(x)
            if i < 3:
                x = getattr(stem, f'act{i + 1}')(x)
            scale = 2**(i + 1)
            keep = ((torch.arange(x.shape[2], device=x.device)[None, :, None] < (rows // scale)[:, None, None])
                    & (torch.arange(x.shape[3], device=x.device)[None, None, :] < (cols // scale)[:, None, None]))
            x = x * keep[:, None].to(x.dtype)
            if i in (1, 2):
                maps.append(x)
        return x, tuple(maps), with_sizes(~keep.flatten(1), sizes)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded; default: the mask our
        data preprocessors attach to ``x``] -> tuple of NCHW maps for ``out_indices``. With a mask,
        in eval mode, an image gets the features it gets alone (see the module docstring)."""
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        _, _, outs = self.forward_levels(x, max(self.out_indices), pad_mask)
        return tuple(outs[i] for i in self.out_indices)

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: token mean of the last stage -> head (averaged with head_dist if present)."""
        self.check_head()
        self.resolve_pad_mask(x)  # the input check of forward
        tokens, _, _ = self.forward_levels(x)
        pooled = tokens.mean(dim=1)
        logits = self.head(pooled)
        if self.head_dist is not None:
            logits = (logits + self.head_dist(pooled)) / 2
        return logits


@MODELS.register_module()
class ArmourLeViT(LeViT):
    """LeViT with Armour attention (v = [q | v_own], W_Q shared with half of V) in every stage."""
    default_attention = 'armour'


@MODELS.register_module()
class ArmourPlusLeViT(LeViT):
    """LeViT with Armour+ attention (v = [q | k], no value projection) in every stage."""
    default_attention = 'armour_plus'
