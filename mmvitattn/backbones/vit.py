"""Plain ViT / DeiT backbone with the token mixer chosen per block, plus multi-scale outputs.

One isotropic trunk: a 16x16 patch embedding, an optional cls token, an absolute position
embedding trained at ``pretrain_img_size`` and resized to the run-time grid (the cls entry kept
as is), ``depth`` pre-norm blocks and a final LayerNorm. Attribute names follow the DeiT /
InLine-DeiT / timm checkpoints (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,attn.residual.*,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
``head``), so their weights load without renaming; ``convert_vit_checkpoint`` handles the
wrappers, distilled DeiT files and position-embedding resizing.

A plain ViT has a single stride-16 map; detection and segmentation heads want a pyramid. The
backbone offers three output types (``out_type``):

- ``'featmap'``: the stride-16 map after each block in ``out_indices``;
- ``'simple_pyramid'`` (ViTDet): from one block's map (the last by default), strides 4/8/16/32
  made by two / one 2x transposed convs, identity and 2x max-pool, each followed by a norm;
- ``'multi_level'`` (BEiT/MAE segmentation style): one block per output (``out_indices``), each
  map resized to its stride in ``out_strides`` by the same operations.

"InLine-DeiT-T", "Armour-S" and "Castling-ViT" are configurations of the one ``ViT`` class; the
registered subclasses only pick the attention and the released widths.

Reference followed: timm's ``vision_transformer.py`` (DeiT's weights; equality with timm is
tested) and the released InLine-DeiT (LeapLabTHU/InLine, ``models/inline_deit.py``, built on
timm's ViT):

- LayerNorm eps 1e-6 in the blocks and the final norm; GELU MLPs; pre-norm blocks; drop path
  rising linearly over the blocks; the classifier on the cls token after the final norm.
- position embeddings at another grid: timm's ``resample_abs_pos_embed`` (bicubic, antialias,
  ``align_corners=False``, the cls entry kept). The released InLine-DeiT models never resize
  (each runs at its training size: 224 / 288 / 448); DeiT's fine-tuning script and ViTDet resize
  bicubically without antialias, available as ``interpolate_antialias=False``.
- sizes that are not a multiple of 16 are zero-padded up (timm's ``dynamic_img_pad``).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..attention import ATTENTIONS
from ..checkpoint.vit import convert_vit_checkpoint
from ..necks.simple_pyramid import LayerNorm2d, build_rescale, init_rescale_weights, rescale_level
from ..padding import image_sizes, tokens_to_map
from ..registry import MODELS
from .attention_spec import mixer_options, resolve_attention, resolve_attn_cfgs
from .common import (BackboneBase, Block, PatchEmbed, check_interpolation, init_transformer_weights, per_stage,
                     resize_pos_embed, resize_pos_embed_per_image)

# Released sizes. DeiT-Ti/S/B (timm / facebookresearch/deit; also Armour and Castling-ViT trunks)
# and InLine-DeiT-T/S/B (head dim 32, trained at 224 / 288 / 448).
VIT_ARCHS: Dict[str, dict] = {
    'deit-t': dict(embed_dim=192, depth=12, num_heads=3, pretrain_img_size=224),
    'deit-s': dict(embed_dim=384, depth=12, num_heads=6, pretrain_img_size=224),
    'deit-b': dict(embed_dim=768, depth=12, num_heads=12, pretrain_img_size=224),
    'inline-deit-t': dict(embed_dim=192, depth=12, num_heads=6, pretrain_img_size=224),
    'inline-deit-s': dict(embed_dim=320, depth=12, num_heads=10, pretrain_img_size=288),
    'inline-deit-b': dict(embed_dim=384, depth=12, num_heads=12, pretrain_img_size=448),
}
SHORT_ARCHS = {'t': 't', 'ti': 't', 'tiny': 't', 's': 's', 'small': 's', 'b': 'b', 'base': 'b'}
OUT_TYPES = ('featmap', 'simple_pyramid', 'multi_level')


@MODELS.register_module()
class ViT(BackboneBase):
    """Plain ViT / DeiT with any registered attention.

    Args:
        arch: a released size: 'deit-t', 'deit-s', 'deit-b', 'inline-deit-t', 'inline-deit-s',
            'inline-deit-b', or a short name 't'/'s'/'b' ('ti', 'tiny', 'small', 'base' too)
            resolved within the class's family (DeiT widths here, InLine widths for InLineViT);
            None to give ``embed_dim``, ``depth``, ``num_heads`` yourself. Explicit
            ``embed_dim``/``depth``/``num_heads``/``pretrain_img_size`` override the arch's.
        attention: registered attention name for every block, or one name per block (the grammar
            of :mod:`~mmvitattn.backbones.attention_spec`, the blocks being the stages).
        attn_cfgs: mixer options, one dict for all blocks or one per block, e.g.
            ``attn_cfgs=dict(aux_softmax=True)`` or ``attn_cfgs=dict(castling=dict(aux_softmax=True))``.
        with_cls_token: prepend a learned cls token (DeiT); it takes part in attention (for InLine:
            in the means, not in the local conv) and is dropped from the returned maps.
        pretrain_img_size: the image size the position embedding was trained at (its grid is
            ``pretrain_img_size // patch_size``); resized to every run-time grid with
            ``interpolate_mode`` / ``interpolate_antialias`` (timm's bicubic + antialias by default).
        final_norm: the final LayerNorm ``norm`` (DeiT) after the last block, applied to the last
            block's map when it is returned and before the classifier. Default: on unless
            ``out_norm`` is on (then each output has its own norm and a checkpoint's ``norm.*`` is
            dropped on load).
        norm_eps: LayerNorm epsilon in the trunk (1e-6 as DeiT/timm).
        out_type: 'featmap', 'simple_pyramid' or 'multi_level' (see the module docstring).
        out_indices: block indices whose output is used (negative counts from the end).
            Default: the last block ('featmap', 'simple_pyramid'); four evenly spaced blocks
            ending with the last ('multi_level': 2, 5, 8, 11 for depth 12).
            'simple_pyramid' takes exactly one.
        out_strides: output strides of the pyramid types, each in {p/4, p/2, p, 2p} for patch
            size p (default 4, 8, 16, 32); 'multi_level' needs one per out index.
        out_channels: widths of the pyramid outputs, one int for all or one per output
            (default: the embedding width). Not used by 'featmap'.
        out_norm: a LayerNorm over channels (``out_norms.{k}``) on every returned map. Default on
            for 'simple_pyramid' (ViTDet's per-level norms), off otherwise.
        num_classes: > 0 adds the ImageNet head on the (normed) cls token, or on the token mean
            without a cls token; ``forward_classifier`` returns its logits.
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate, init_cfg: the usual
            backbone options. Stage 0 is the embedding (patch_embed, cls_token, pos_embed) and
            stage k the k-th block, so ``frozen_stages=k`` freezes the embedding and the first k
            blocks (and ``norm`` when k = depth).
        init_cfg: ``dict(type='Pretrained', checkpoint=path[, prefix='backbone.'])`` loads a
            DeiT / InLine-DeiT / timm / mmengine checkpoint through ``convert_vit_checkpoint``
            with the safe loader; anything else goes to mmengine.

    ``forward(x, pad_mask=None)``: images (B, C, H, W) and an optional pixel mask (B, H, W),
    True = batch padding (default: the mask our data preprocessors attach to ``x``). Padded
    tokens are excluded from the attention's sums/means/softmax, each image's position
    embedding is resized to its own grid, pyramid max-pools ignore padded positions, and padded
    positions are zero in the returned maps: an image gets the features it gets alone.
    """
    default_attention: Optional[str] = None
    arch_family = 'deit'
    arch_zoo = VIT_ARCHS
    family = 'ViT'

    def __init__(self, arch: Optional[str] = 't', attention: Union[str, Sequence[str], None] = None,
                 attn_cfgs: Union[dict, Sequence[dict], None] = None, embed_dim: Optional[int] = None,
                 depth: Optional[int] = None, num_heads: Optional[int] = None, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, patch_size: int = 16, in_channels: int = 3,
                 pretrain_img_size: Optional[int] = None, with_cls_token: bool = True,
                 interpolate_mode: str = 'bicubic', interpolate_antialias: bool = True,
                 final_norm: Optional[bool] = None, norm_eps: float = 1e-6, drop_path_rate: float = 0.0,
                 out_type: str = 'featmap', out_indices: Union[int, Sequence[int], None] = None,
                 out_strides: Optional[Sequence[int]] = None,
                 out_channels: Union[int, Sequence[int], None] = None, out_norm: Optional[bool] = None,
                 num_classes: int = 0, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        cfg = self.resolve_arch(self.arch_key(arch), dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads))
        embed_dim, depth, num_heads = cfg['embed_dim'], cfg['depth'], cfg['num_heads']
        pretrain_img_size = pretrain_img_size or cfg.get('pretrain_img_size', 224)
        for name, value in (('embed_dim', embed_dim), ('depth', depth), ('patch_size', patch_size),
                            ('pretrain_img_size', pretrain_img_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if pretrain_img_size < patch_size:
            raise ValueError(f'pretrain_img_size={pretrain_img_size} is smaller than patch_size={patch_size}')
        check_interpolation(interpolate_mode, interpolate_antialias)
        # The grammar's stages are the blocks here: one name (or dict) for all, or one per block.
        block_attention = resolve_attention(attention if attention is not None else self.default_attention,
                                            (1, ) * depth, ATTENTIONS, unit='block', owner=type(self).__name__)
        block_cfgs = resolve_attn_cfgs(attn_cfgs, block_attention, ATTENTIONS, unit='block')
        attention = tuple(stage[0] for stage in block_attention)
        for name in dict.fromkeys(attention):
            if with_cls_token and not ATTENTIONS[name].takes_prefix_tokens:
                raise ValueError(f'{name!r} attention works on windows of the token grid and takes no cls token; '
                                 'build the ViT with with_cls_token=False (as ViTDet does)')
        self.check_frozen_stages(depth, ' (0 = patch embedding, k = embedding + first k blocks)')
        if out_type not in OUT_TYPES:
            raise ValueError(f'unknown out_type {out_type!r}; expected one of {OUT_TYPES}')

        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.attention = attention
        self.out_type = out_type
        self.num_prefix_tokens = 1 if with_cls_token else 0
        self.pos_grid = (pretrain_img_size // patch_size, ) * 2
        self.interpolate_mode = interpolate_mode
        self.interpolate_antialias = interpolate_antialias
        self.out_indices = self._check_out_indices(out_type, out_indices, depth)
        self.out_strides = self._check_out_strides(out_type, out_strides, len(self.out_indices), patch_size)
        self.out_channels = self._check_out_channels(out_type, out_channels, len(self.out_strides), embed_dim)
        if out_norm is None:
            out_norm = out_type == 'simple_pyramid'
        if final_norm is None:
            final_norm = not out_norm

        # Trunk, in checkpoint order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if with_cls_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + self.pos_grid[0] * self.pos_grid[1], embed_dim))
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size, norm=False)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linearly rising
        blocks = []
        for i in range(depth):
            acfg = mixer_options(attention[i], dict(qkv_bias=qkv_bias, qkv_layout='qkv'), block_cfgs[i][0])
            blocks.append(Block(embed_dim, num_heads, attention[i], mlp_ratio=mlp_ratio, drop_path=dpr[i],
                                attn_cfg=acfg, norm_eps=norm_eps))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else None
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None

        # Outputs.
        if out_type == 'featmap':
            self.pyramid = None
        else:
            self.pyramid = nn.ModuleList([
                build_rescale(patch_size / s, embed_dim, c) for s, c in zip(self.out_strides, self.out_channels)
            ])
        self.out_norm = out_norm
        self.out_norms = nn.ModuleList([LayerNorm2d(c, eps=1e-6) for c in self.out_channels]) if out_norm else None

        self._init_default_weights()
        self._freeze_stages()

    # ----------------------------------------------------------------- configuration helpers
    @classmethod
    def arch_key(cls, arch: Optional[str]) -> Optional[str]:
        """A short name ('t', 'small', ...) -> its size in the class's family ('deit-t', 'inline-deit-s')."""
        if arch is None:
            return None
        key = arch.lower() if isinstance(arch, str) else None
        if key in SHORT_ARCHS:
            return f'{cls.arch_family}-{SHORT_ARCHS[key]}'
        if key not in VIT_ARCHS:
            raise ValueError(f'unknown ViT arch {arch!r}; expected one of {sorted(VIT_ARCHS)}, a short name '
                             f'{sorted(SHORT_ARCHS)} or arch=None with explicit embed_dim/depth/num_heads')
        return key

    @staticmethod
    def _check_out_indices(out_type, out_indices, depth) -> Tuple[int, ...]:
        if out_indices is None:
            if out_type == 'multi_level':
                return tuple(max(depth * (k + 1) // 4 - 1, 0) for k in range(4))
            return (depth - 1, )
        out_indices = (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)
        if not out_indices:
            raise ValueError('out_indices must name at least one block')
        result = []
        for i in out_indices:
            if not isinstance(i, int) or not -depth <= i < depth:
                raise ValueError(f'out_indices entry {i!r} is out of range; expected block indices '
                                 f'0..{depth - 1} (or -{depth}..-1)')
            result.append(i % depth)
        if out_type == 'simple_pyramid' and len(result) != 1:
            raise ValueError(f"out_type='simple_pyramid' builds every level from one block; got "
                             f'out_indices={out_indices!r}, expected a single index')
        return tuple(result)

    @staticmethod
    def _check_out_strides(out_type, out_strides, num_indices, patch_size) -> Tuple[int, ...]:
        if out_type == 'featmap':
            if out_strides is not None and any(s != patch_size for s in out_strides):
                raise ValueError(f"out_type='featmap' returns stride-{patch_size} maps only; got "
                                 f'out_strides={tuple(out_strides)!r}')
            return (patch_size, ) * num_indices
        allowed = (patch_size // 4, patch_size // 2, patch_size, patch_size * 2)
        if out_strides is None:
            out_strides = allowed
        out_strides = tuple(out_strides)
        for s in out_strides:
            if s not in allowed or patch_size % 4:
                raise ValueError(f'out_strides entry {s!r} is not supported; expected strides from {allowed} '
                                 f'(patch size {patch_size} with 2x up/down-sampling)')
        if out_type == 'multi_level' and len(out_strides) != num_indices:
            raise ValueError(f"out_type='multi_level' needs one out_strides entry per out index "
                             f'({num_indices}), got {len(out_strides)}: {out_strides!r}')
        return out_strides

    @staticmethod
    def _check_out_channels(out_type, out_channels, num_outputs, embed_dim) -> Tuple[int, ...]:
        if out_type == 'featmap':
            widths = per_stage(out_channels, num_outputs, 'out_channels', 'output')
            if out_channels is not None and any(c != embed_dim for c in widths):
                raise ValueError(f"out_type='featmap' returns the {embed_dim}-wide maps unchanged; "
                                 f'out_channels={out_channels!r} needs a pyramid out_type')
            return (embed_dim, ) * num_outputs
        if out_channels is None:
            return (embed_dim, ) * num_outputs
        if isinstance(out_channels, int):
            out_channels = (out_channels, ) * num_outputs
        out_channels = tuple(out_channels)
        if len(out_channels) != num_outputs:
            raise ValueError(f'out_channels needs one entry per output ({num_outputs}), '
                             f'got {len(out_channels)}: {out_channels!r}')
        for c in out_channels:
            if not isinstance(c, int) or c <= 0:
                raise ValueError(f'out_channels entries must be positive ints, got {c!r}')
        return out_channels

    def _init_default_weights(self):
        init_transformer_weights(self)
        if self.pyramid is not None:
            init_rescale_weights(self.pyramid)
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    def convert_pretrained_state(self, state):
        """DeiT / InLine-DeiT / timm layouts -> ours, position embedding resized (see
        :func:`~mmvitattn.checkpoint.vit.convert_vit_checkpoint`)."""
        return convert_vit_checkpoint(state, self)

    # ----------------------------------------------------------------- backbone conventions
    def stage_modules(self, index: int):
        if index == 0:
            items = [self.patch_embed, self.pos_embed]
            return items + ([self.cls_token] if self.cls_token is not None else [])
        items = [self.blocks[index - 1]]
        if index == self.depth and self.norm is not None:
            items.append(self.norm)
        return items

    # ----------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images -> tokens (B, prefix + h*w, C) with position embedding, (h, w), token mask."""
        tokens, hw, token_pad = self.patch_embed(x, pad_mask)
        sizes = None if token_pad is None else image_sizes(token_pad, hw)  # each image's token grid
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            if token_pad is not None:
                token_pad = F.pad(token_pad, (self.num_prefix_tokens, 0), value=False)
        if token_pad is None:
            pos = resize_pos_embed(self.pos_embed, self.pos_grid, hw, self.num_prefix_tokens,
                                   self.interpolate_mode, self.interpolate_antialias)
        else:
            # Each image gets the embedding resized to its own grid, as when it runs alone.
            pos = resize_pos_embed_per_image(self.pos_embed, self.pos_grid, hw, sizes,
                                             self.num_prefix_tokens, mode=self.interpolate_mode,
                                             antialias=self.interpolate_antialias)
        return tokens + pos, hw, token_pad

    def forward_blocks(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None, stop: Optional[int] = None):
        """Yield (block index, tokens after it, (h, w), token mask); the final ``norm`` is applied
        to the last block's tokens. Stops after block ``stop``."""
        tokens, hw, token_pad = self.embed(x, pad_mask)
        stop = self.depth - 1 if stop is None else stop
        for i, block in enumerate(self.blocks[:stop + 1]):
            tokens = self.run_block(block, tokens, hw, token_pad)
            if i == self.depth - 1 and self.norm is not None:
                tokens = self.norm(tokens)
            yield i, tokens, hw, token_pad

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All blocks (+ final norm): tokens (B, prefix + h*w, C), like timm's ``forward_features``."""
        self.resolve_pad_mask(x)  # the input check of forward
        *_, (_, tokens, _, _) = self.forward_blocks(x)
        return tokens

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded] -> tuple of NCHW maps.

        Without ``pad_mask`` the mask our data preprocessors attach to ``x`` is used (if any)."""
        pad_mask = self.resolve_pad_mask(x, pad_mask)
        maps = {}
        wanted = set(self.out_indices)
        grid_pad = None
        for i, tokens, hw, token_pad in self.forward_blocks(x, pad_mask, stop=max(self.out_indices)):
            if i in wanted:
                maps[i] = tokens_to_map(tokens, hw, token_pad)  # prefix dropped, padding zero
            if token_pad is not None:
                grid_pad = token_pad[:, self.num_prefix_tokens:].reshape(-1, *hw)
        if self.out_type == 'simple_pyramid':
            sources = [maps[self.out_indices[0]]] * len(self.out_strides)
        else:
            sources = [maps[i] for i in self.out_indices]
        outs = []
        for k, feat in enumerate(sources):
            op = self.pyramid[k] if self.pyramid is not None else nn.Identity()
            norm = self.out_norms[k] if self.out_norms is not None else None
            outs.append(rescale_level(op, self.patch_size / self.out_strides[k], feat, grid_pad, norm))
        return tuple(outs)

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-style logits from the (normed) cls token, or the token mean without one."""
        self.check_head()
        self.resolve_pad_mask(x)  # the input check of forward
        tokens = self.forward_features(x)
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
        return self.head(pooled)


@MODELS.register_module()
class InLineViT(ViT):
    """InLine-DeiT: InLine attention in every block, InLine widths ('t': 192/6 heads at 224,
    's': 320/10 at 288, 'b': 384/12 at 448; head dim 32), the released InLine-DeiT-T/S/B."""
    default_attention = 'inline'
    arch_family = 'inline-deit'


@MODELS.register_module()
class CastlingViT(ViT):
    """Castling-ViT: DeiT trunk with linear-angular attention in every block."""
    default_attention = 'castling'


@MODELS.register_module()
class ArmourViT(ViT):
    """Armour-Ti/S/B: DeiT trunk whose attention shares W_Q = W_V (``attn.kv``, C -> 2C)."""
    default_attention = 'armour'


@MODELS.register_module()
class SoftmaxViT(ViT):
    """DeiT-Ti/S/B: global softmax attention, the baseline (loads timm/DeiT weights as they are)."""
    default_attention = 'softmax'


# The papers' names: InLine-DeiT, Armour-DeiT, plain DeiT.
InLineDeiT, ArmourDeiT, CastlingDeiT, DeiT = InLineViT, ArmourViT, CastlingViT, SoftmaxViT
for _name, _cls in (('InLineDeiT', InLineViT), ('ArmourDeiT', ArmourViT), ('CastlingDeiT', CastlingViT),
                    ('DeiT', SoftmaxViT)):
    MODELS.register_module(name=_name, module=_cls)
