"""PVT-family hierarchical backbone with the token mixer chosen per stage.

Four stages; stage i embeds patches (stride 4, then 2), adds an optional absolute position
embedding resized to the run-time grid, runs ``depths[i]`` blocks and (PVTv2) normalises the tokens
it hands on. Attribute names follow the released PVT/InLine-PVT and PVTv2 checkpoints
(``patch_embed{i}``, ``pos_embed{i}``, ``block{i}``, ``norm{i}``) so their weights load without
renaming; timm's ``pvt_v2_*`` layout is converted by :func:`convert_timm_pvt_v2`. "InLine-PVT-T",
"Castling-PVT-S" and "PVTv2-B2" are configurations of one class.

Reference followed: the released InLine-PVT code (LeapLabTHU/InLine, ``models/inline_pvt.py``) and
PVTv1 (whai362/PVT, ``classification/pvt.py`` and ``detection/pvt.py``, which agree on all of this):

- LayerNorm eps 1e-6 in the blocks (the factories' ``norm_layer=partial(nn.LayerNorm, eps=1e-6)``);
  1e-5 (PyTorch's default) in the patch embeddings and spatial reductions, which do not take
  ``norm_layer``. PVTv2 (whai362/PVT ``pvt_v2.py``, timm): 1e-6 in blocks and stage norms too.
- position embeddings at another grid: bilinear, ``align_corners=False``, no antialias (their
  ``_get_pos_embed``). The released code skips the resize when a stage has as many tokens as
  stage 1 at 224, a shortcut that is only right at 224; here the embedding is resized whenever the
  grid differs from the trained one, and a checkpoint trained on another grid is resized on load
  by the same rule. ``interpolate_mode``/``interpolate_antialias`` select another rule.
- GELU MLPs, pre-norm blocks, drop path rising linearly over all blocks (``linspace(0, rate,
  sum(depths))``), the classifier on the token mean of the last stage, no final norm (InLine-PVT;
  PVTv1 classifies a cls token after a final norm, which this backbone does not build: its
  checkpoint's last-stage cls position slot is dropped on load, as PVT's detection code does).
- Sizes that are not a multiple of the stride: the released patch embeddings drop the last
  ``H mod stride`` rows/columns (floor); here the input is zero-padded up instead (ceil), so every
  pixel is seen and a padded batch gives each image its own features. At multiples of 32 (every
  mmdet / mmseg pipeline here pads to 32) the two are the same.
"""
import math
import re
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..attention import ATTENTIONS
from ..registry import MODELS
from ..padding import PAD_MASK_ATTR, image_sizes, strided_size, tokens_to_map
from .attention_spec import mixer_options, resolve_attention, resolve_attn_cfgs, stage_summary
from .common import (BackboneBase, Block, PatchEmbed, check_interpolation, check_out_indices,
                     init_transformer_weights, per_stage, resize_pos_embed, resize_pos_embed_per_image)

# Depths of the released InLine-PVT sizes; widths, heads (head dim 32) and MLP ratios are shared.
PVT_ARCHS = {
    't': dict(depths=(2, 2, 2, 2)),
    's': dict(depths=(3, 4, 6, 3)),
    'm': dict(depths=(3, 4, 18, 3)),
    'l': dict(depths=(3, 8, 27, 3)),
}
PVT_DEFAULTS = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4),
                    sr_ratios=(8, 4, 2, 1))

# PVTv2 (Wang et al. 2022, Table 1; timm ``pvt_v2_b*``): head dim 32 (b0) or 64, MLP ratios 8,8,4,4
# except b5 (4,4,4,4), spatial reduction 8,4,2,1 (the 'li' linear-SRA variant is not covered).
PVT_V2_ARCHS = {
    'b0': dict(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256)),
    'b1': dict(depths=(2, 2, 2, 2)),
    'b2': dict(depths=(3, 4, 6, 3)),
    'b3': dict(depths=(3, 4, 18, 3)),
    'b4': dict(depths=(3, 8, 27, 3)),
    'b5': dict(depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}
PVT_V2_DEFAULTS = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                       sr_ratios=(8, 4, 2, 1))


@MODELS.register_module()
class PVT(BackboneBase):
    """Args:
        arch: a key of ``arch_zoo`` ('t', 's', 'm' or 'l': the released InLine-PVT depths; PVTv2:
            'b0'..'b5'), or None to give ``depths`` yourself. Explicit ``depths``, ``embed_dims``,
            ``num_heads``, ``mlp_ratios`` and ``sr_ratios`` override the arch's values; what neither
            gives comes from ``arch_defaults``.
        attention: registered attention name for every stage, or one per stage (or per block)
            (e.g. ``attention='inline'`` or ``attention=('sra', 'sra', 'inline', 'inline')``); the grammar of
            :mod:`~mmvitattn.backbones.attention_spec`.
        attn_cfgs: mixer options, one dict for all stages or one per stage (or block)
            (e.g. ``sr_ratio`` for 'sra', ``aux_softmax`` for 'castling').
        sr_ratios: spatial-reduction ratios used by 'sra' stages (PVT's 8, 4, 2, 1).
        overlap_patch_embed: PVTv2-style overlapping patch embedding instead of PVTv1's.
        mlp_dwconv: PVTv2-style depthwise conv inside the MLP.
        use_pos_embed: absolute position embeddings (trained at ``pretrain_img_size``, resized to
            the run-time grid with ``interpolate_mode`` / ``interpolate_antialias``: bilinear
            without antialias by default, the released PVT / InLine-PVT rule).
        stage_norm: PVTv2-style LayerNorm (``norm{i}``) at the end of every stage: applied to the
            tokens that leave the stage, i.e. both to the returned map and to the next stage's input.
        norm_eps: epsilon of the blocks' and stage norms' LayerNorms (1e-6, as the released PVT,
            InLine-PVT and PVTv2 factories). The patch embeddings' and spatial reductions'
            LayerNorms keep 1e-5, as in those releases.
        out_norm: a LayerNorm (``out_norm{i}``) on every returned map. The released models have
            none; dense-prediction heads train more stably with them (as mmdet's PVT and Swin).
            With ``stage_norm`` it comes on top of the stage norm.
        num_classes: > 0 adds a classification head on the pooled last stage (ImageNet models).
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate: the usual backbone options.
    """
    default_attention: Optional[str] = None
    num_stages = 4
    family = 'PVT'
    arch_zoo = PVT_ARCHS
    arch_defaults = PVT_DEFAULTS

    def __init__(self, arch: Optional[str] = 't', attention: Union[str, Sequence[str], None] = None,
                 attn_cfgs: Union[dict, Sequence[dict], None] = None, depths: Optional[Sequence[int]] = None,
                 embed_dims: Optional[Sequence[int]] = None, num_heads: Optional[Sequence[int]] = None,
                 mlp_ratios: Optional[Sequence[float]] = None, sr_ratios: Optional[Sequence[int]] = None,
                 qkv_bias: bool = True, in_channels: int = 3,
                 overlap_patch_embed: bool = False, mlp_dwconv: bool = False, use_pos_embed: bool = True,
                 stage_norm: bool = False, norm_eps: float = 1e-6,
                 interpolate_mode: str = 'bilinear', interpolate_antialias: bool = False,
                 pretrain_img_size: int = 224, drop_path_rate: float = 0.0,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = False, num_classes: int = 0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        given = dict(depths=depths, embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios,
                     sr_ratios=sr_ratios)
        spec = self.resolve_arch(arch, given, defaults=self.arch_defaults)
        depths, embed_dims, num_heads, mlp_ratios, sr_ratios = (spec[k] for k in given)
        n = self.num_stages
        depths = per_stage(depths, n, 'depths')
        embed_dims = per_stage(embed_dims, n, 'embed_dims')
        num_heads = per_stage(num_heads, n, 'num_heads')
        mlp_ratios = per_stage(mlp_ratios, n, 'mlp_ratios')
        sr_ratios = per_stage(sr_ratios, n, 'sr_ratios')
        block_attention = resolve_attention(attention or self.default_attention, depths, ATTENTIONS,
                                            owner=type(self).__name__)
        block_cfgs = resolve_attn_cfgs(attn_cfgs, block_attention, ATTENTIONS)
        self.check_frozen_stages(n - 1)
        check_interpolation(interpolate_mode, interpolate_antialias)
        self.out_indices = check_out_indices(out_indices, n)
        self.embed_dims = embed_dims
        self.attention = stage_summary(block_attention)
        self.use_pos_embed = use_pos_embed
        self.interpolation = dict(mode=interpolate_mode, antialias=interpolate_antialias)
        self.stage_norm = stage_norm

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        grid = pretrain_img_size // 4
        self.pos_grids = []
        for i in range(n):
            stride = 4 if i == 0 else 2
            setattr(self, f'patch_embed{i + 1}',
                    PatchEmbed(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i], stride,
                               overlap=overlap_patch_embed))
            if i:
                grid //= 2
            self.pos_grids.append((grid, grid))
            if use_pos_embed:
                setattr(self, f'pos_embed{i + 1}', nn.Parameter(torch.zeros(1, grid * grid, embed_dims[i])))
            defaults = dict(qkv_bias=qkv_bias, qkv_layout='q_kv', sr_ratio=sr_ratios[i])
            start = sum(depths[:i])
            setattr(self, f'block{i + 1}', nn.ModuleList([
                Block(embed_dims[i], num_heads[i], name, mlp_ratio=mlp_ratios[i], drop_path=dpr[start + j],
                      mlp_dwconv=mlp_dwconv, attn_cfg=mixer_options(name, defaults, block_cfgs[i][j]),
                      norm_eps=norm_eps)
                for j, name in enumerate(block_attention[i])
            ]))
            if stage_norm:
                setattr(self, f'norm{i + 1}', nn.LayerNorm(embed_dims[i], eps=norm_eps))
        self.out_norm = out_norm
        if out_norm:
            for i in self.out_indices:
                setattr(self, f'out_norm{i + 1}', nn.LayerNorm(embed_dims[i]))
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else None
        self._init_default_weights()
        self._freeze_stages()

    def _init_default_weights(self):
        init_transformer_weights(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.use_pos_embed:
            for i in range(self.num_stages):
                trunc_normal_(getattr(self, f'pos_embed{i + 1}'), std=0.02)

    def convert_pretrained_state(self, state):
        """timm's ``pvt_v2_*`` / the official PVTv2 layout -> ours (see :func:`convert_timm_pvt_v2`)."""
        return convert_timm_pvt_v2(state, model=self)

    def resize_pretrained_tensor(self, key, tensor, shape):
        """``pos_embed{i}`` trained on another (square) grid -> this model's grid."""
        m = re.fullmatch(r'pos_embed(\d)', key)
        if m is None or tensor.dim() != 3:
            return None
        side = math.isqrt(tensor.shape[1])
        if side * side + 1 == tensor.shape[1]:
            tensor = tensor[:, 1:]  # PVTv1's last stage carries a cls-token slot; we pool instead
        elif side * side != tensor.shape[1]:
            return None
        return resize_pos_embed(tensor, (side, side), self.pos_grids[int(m.group(1)) - 1], **self.interpolation)

    def stage_modules(self, index: int):
        items = [getattr(self, f'patch_embed{index + 1}'), getattr(self, f'block{index + 1}')]
        if self.stage_norm:
            items.append(getattr(self, f'norm{index + 1}'))
        if self.out_norm and index in self.out_indices:
            items.append(getattr(self, f'out_norm{index + 1}'))
        if self.use_pos_embed:
            items.append(getattr(self, f'pos_embed{index + 1}'))
        return items

    def forward_stages(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Yield (stage input for the next stage, NCHW map to return) for every stage, in order."""
        self.check_input_size(tuple(x.shape[2:]))
        for i in range(self.num_stages):
            tokens, hw, token_pad = getattr(self, f'patch_embed{i + 1}')(x, pad_mask)
            if self.use_pos_embed:
                tokens = tokens + self.stage_pos_embed(i, hw, token_pad)
            for block in getattr(self, f'block{i + 1}'):
                tokens = self.run_block(block, tokens, hw, token_pad)
            if self.stage_norm:
                tokens = getattr(self, f'norm{i + 1}')(tokens)  # feeds the next stage too (PVTv2)
            out = tokens
            if self.out_norm and i in self.out_indices:
                out = getattr(self, f'out_norm{i + 1}')(tokens)  # on the output only, not the next stage
            # Padded positions leave each stage as zeros, exactly what the next stage's patch
            # embedding sees as zero padding when the image runs alone; the map carries its mask.
            x = tokens_to_map(tokens, hw, token_pad)
            pad_mask = getattr(x, PAD_MASK_ATTR, None)
            yield x, tokens_to_map(out, hw, token_pad)

    def stage_pos_embed(self, index: int, hw, token_pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Stage ``index``'s position embedding for an (h, w) token map: (1, h*w, C), or with a
        token padding mask (B, h*w, C), each image's resized to its own grid (as when it runs alone)."""
        pos_embed = getattr(self, f'pos_embed{index + 1}')
        if token_pad is None:
            return resize_pos_embed(pos_embed, self.pos_grids[index], hw, **self.interpolation)
        return resize_pos_embed_per_image(pos_embed, self.pos_grids[index], hw, image_sizes(token_pad, hw),
                                          **self.interpolation)

    def check_input_size(self, hw) -> None:
        """Stage i's map is ceil(H / 2^(i+2)) x ceil(W / 2^(i+2)); a spatial-reduction stage needs
        it at least ``sr_ratio`` wide. Checked before any work, with the size the input needs."""
        for i in range(self.num_stages):
            blocks = getattr(self, f'block{i + 1}')
            r = getattr(blocks[0].attn, 'sr_ratio', 1) if len(blocks) else 1
            stride = 4 * 2**i
            side = strided_size(hw, stride)
            if r > 1 and min(side) < r:
                raise ValueError(f'input {hw[0]}x{hw[1]} is too small for {type(self).__name__}: stage {i + 1} '
                                 f'(stride {stride}) gets a {side[0]}x{side[1]} token map, smaller than its '
                                 f'sr_ratio={r}; the input needs at least {stride * (r - 1) + 1} pixels per side')

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded; default: the mask our
        data preprocessors attach to ``x``] -> tuple of NCHW maps."""
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        if pad_mask is not None:  # every image of the batch must fit on its own
            sizes = image_sizes(pad_mask)
            self.check_input_size((min(h for h, _ in sizes), min(w for _, w in sizes)))
        return self.select_outputs(feat for _, feat in self.forward_stages(x, pad_mask))

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-style logits: mean-pooled last stage -> head."""
        self.check_head()
        self.resolve_pad_mask(x)  # the input check of forward
        *_, (last, _) = self.forward_stages(x)
        return self.head(last.mean(dim=(2, 3)))


@MODELS.register_module()
class InLinePVT(PVT):
    """PVT with InLine attention in every stage (the released InLine-PVT models)."""
    default_attention = 'inline'


@MODELS.register_module()
class CastlingPVT(PVT):
    """PVT trunk with Castling linear-angular attention in every stage."""
    default_attention = 'castling'


@MODELS.register_module()
class ArmourPVT(PVT):
    """PVT trunk with Armour (W_Q = W_V) global attention in every stage."""
    default_attention = 'armour'


@MODELS.register_module()
class SoftmaxPVT(PVT):
    """PVT trunk with softmax spatial-reduction attention (PVTv1's SRA): the softmax baseline."""
    default_attention = 'sra'


@MODELS.register_module()
class PVTv2(PVT):
    """PVTv2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer"): overlapping
    patch embeddings (7x7/4, then 3x3/2), a 3x3 depthwise conv in every MLP, no position
    embeddings, a LayerNorm ending every stage, LayerNorm eps 1e-6, and softmax spatial-reduction
    attention by default (``attention`` swaps the mixer, e.g. ``'inline'``). ``arch`` 'b0'..'b5';
    with ``attention='sra'`` it computes exactly timm's ``pvt_v2_b*`` (load those weights with
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` or :func:`convert_timm_pvt_v2`)."""
    default_attention = 'sra'
    family = 'PVTv2'
    arch_zoo = PVT_V2_ARCHS
    arch_defaults = PVT_V2_DEFAULTS

    def __init__(self, arch: Optional[str] = 'b0', overlap_patch_embed: bool = True, mlp_dwconv: bool = True,
                 use_pos_embed: bool = False, stage_norm: bool = True, norm_eps: float = 1e-6, **kwargs):
        super().__init__(arch=arch, overlap_patch_embed=overlap_patch_embed, mlp_dwconv=mlp_dwconv,
                         use_pos_embed=use_pos_embed, stage_norm=stage_norm, norm_eps=norm_eps, **kwargs)


def convert_timm_pvt_v2(state_dict: Dict[str, torch.Tensor],
                        model: Optional[PVT] = None) -> Dict[str, torch.Tensor]:
    """A timm ``pvt_v2_*`` state dict -> this module's layout (= the official PVTv2 one, except the
    MLP's depthwise conv, which is ``mlp.dwconv`` here and in timm but ``mlp.dwconv.dwconv`` in the
    official release; official checkpoints are accepted too and our own layout passes unchanged).

    timm -> ours: ``patch_embed.*`` -> ``patch_embed1.*``, ``stages.{i}.downsample.*`` ->
    ``patch_embed{i+1}.*``, ``stages.{i}.blocks.{j}.*`` -> ``block{i+1}.{j}.*``, ``stages.{i}.norm.*``
    -> ``norm{i+1}.*``. ``head.*`` is kept only when ``model`` is given and has a head of the same
    shape (a backbone without a classifier has none).
    """
    patterns = [
        (r'^patch_embed\.', 'patch_embed1.'),
        (r'^stages\.(\d+)\.downsample\.', lambda m: f'patch_embed{int(m.group(1)) + 1}.'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.', lambda m: f'block{int(m.group(1)) + 1}.{m.group(2)}.'),
        (r'^stages\.(\d+)\.norm\.', lambda m: f'norm{int(m.group(1)) + 1}.'),
        (r'\.mlp\.dwconv\.dwconv\.', '.mlp.dwconv.'),
    ]
    own = model.state_dict() if model is not None else {}
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in patterns:
            key = re.sub(pattern, repl, key)
        if key.startswith('head.') and (key not in own or own[key].shape != value.shape):
            continue
        out[key] = value
    return out
