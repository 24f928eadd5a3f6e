"""PVT-family hierarchical backbone with the token mixer chosen per stage.

Four stages; stage i embeds patches (stride 4, then 2), adds an optional absolute position
embedding resized to the run-time grid, and runs ``depths[i]`` blocks. Attribute names follow the
released PVT/InLine-PVT checkpoints (``patch_embed{i}``, ``pos_embed{i}``, ``block{i}``) so their
weights load without renaming. "InLine-PVT-T" and "Castling-PVT-S" are configurations of one class.
"""
import math
from typing import Optional, Sequence, Union

import torch
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from ..registry import MODELS
from .common import (BackboneBase, Block, PatchEmbed, check_out_indices, per_stage,
                     resize_pos_embed)

# Depths of the released InLine-PVT sizes; widths, heads (head dim 32) and MLP ratios are shared.
PVT_ARCHS = {
    't': dict(depths=(2, 2, 2, 2)),
    's': dict(depths=(3, 4, 6, 3)),
    'm': dict(depths=(3, 4, 18, 3)),
    'l': dict(depths=(3, 8, 27, 3)),
}
PVT_DEFAULTS = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4))


@MODELS.register_module()
class PVT(BackboneBase):
    """Args:
        arch: 't', 's', 'm' or 'l' (the released depths) or None to give ``depths`` yourself.
        attention: registered attention name for every stage, or one per stage
            (e.g. ``('inline',) * 4`` or ``('sra', 'sra', 'inline', 'inline')``).
        attn_cfgs: extra keyword arguments for the attention, one dict for all stages or one
            per stage (e.g. ``sr_ratio`` for 'sra', ``aux_softmax`` for 'castling').
        sr_ratios: spatial-reduction ratios used by 'sra' stages (PVT's 8, 4, 2, 1).
        overlap_patch_embed: PVTv2-style overlapping patch embedding instead of PVTv1's.
        mlp_dwconv: PVTv2-style depthwise conv inside the MLP.
        use_pos_embed: absolute position embeddings (trained at ``pretrain_img_size``, resized).
        out_norm: a LayerNorm (``out_norm{i}``) on every returned map. The released models have
            none; dense-prediction heads train more stably with them (as mmdet's PVT and Swin).
        num_classes: > 0 adds a classification head on the pooled last stage (ImageNet models).
        out_indices, frozen_stages, norm_eval, with_cp, drop_path_rate: the usual backbone options.
    """
    default_attention: Optional[str] = None
    num_stages = 4

    def __init__(self, arch: Optional[str] = 't', attention: Union[str, Sequence[str], None] = None,
                 attn_cfgs: Union[dict, Sequence[dict], None] = None, depths: Optional[Sequence[int]] = None,
                 embed_dims: Sequence[int] = PVT_DEFAULTS['embed_dims'],
                 num_heads: Sequence[int] = PVT_DEFAULTS['num_heads'],
                 mlp_ratios: Sequence[float] = PVT_DEFAULTS['mlp_ratios'],
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), qkv_bias: bool = True, in_channels: int = 3,
                 overlap_patch_embed: bool = False, mlp_dwconv: bool = False, use_pos_embed: bool = True,
                 pretrain_img_size: int = 224, drop_path_rate: float = 0.0,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = False, num_classes: int = 0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False, init_cfg=None):
        super().__init__(frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=init_cfg)
        if depths is None:
            if arch not in PVT_ARCHS:
                raise ValueError(f'unknown PVT arch {arch!r}; expected one of {sorted(PVT_ARCHS)} '
                                 'or arch=None with explicit depths')
            depths = PVT_ARCHS[arch]['depths']
        n = self.num_stages
        depths = per_stage(depths, n, 'depths')
        embed_dims = per_stage(embed_dims, n, 'embed_dims')
        num_heads = per_stage(num_heads, n, 'num_heads')
        mlp_ratios = per_stage(mlp_ratios, n, 'mlp_ratios')
        sr_ratios = per_stage(sr_ratios, n, 'sr_ratios')
        attention = per_stage(attention or self.default_attention, n, 'attention')
        attn_cfgs = per_stage(attn_cfgs, n, 'attn_cfgs')
        if None in attention:
            raise ValueError('PVT needs attention=<name> or one name per stage')
        if frozen_stages >= n:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range; expected -1..{n - 1}')
        self.out_indices = check_out_indices(out_indices, n)
        self.embed_dims = embed_dims
        self.attention = attention
        self.use_pos_embed = use_pos_embed

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
            cfg = dict(qkv_bias=qkv_bias, qkv_layout='q_kv')
            if attention[i] == 'sra':
                cfg['sr_ratio'] = sr_ratios[i]
            cfg.update(attn_cfgs[i] or {})
            start = sum(depths[:i])
            setattr(self, f'block{i + 1}', nn.ModuleList([
                Block(embed_dims[i], num_heads[i], attention[i], mlp_ratio=mlp_ratios[i],
                      drop_path=dpr[start + j], mlp_dwconv=mlp_dwconv, attn_cfg=cfg)
                for j in range(depths[i])
            ]))
        self.out_norm = out_norm
        if out_norm:
            for i in self.out_indices:
                setattr(self, f'out_norm{i + 1}', nn.LayerNorm(embed_dims[i]))
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else None
        self._init_default_weights()
        self._freeze_stages()

    def _init_default_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.use_pos_embed:
            for i in range(self.num_stages):
                trunc_normal_(getattr(self, f'pos_embed{i + 1}'), std=0.02)

    def stage_modules(self, index: int):
        items = [getattr(self, f'patch_embed{index + 1}'), getattr(self, f'block{index + 1}')]
        if self.out_norm and index in self.out_indices:
            items.append(getattr(self, f'out_norm{index + 1}'))
        if self.use_pos_embed:
            items.append(getattr(self, f'pos_embed{index + 1}'))
        return items

    def forward_stages(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Yield (stage input for the next stage, NCHW map to return) for every stage, in order."""
        if x.dim() != 4:
            raise ValueError(f'PVT expects images of shape (B, C, H, W), got {tuple(x.shape)}')
        for i in range(self.num_stages):
            tokens, hw, token_pad = getattr(self, f'patch_embed{i + 1}')(x, pad_mask)
            if self.use_pos_embed:
                tokens = tokens + resize_pos_embed(getattr(self, f'pos_embed{i + 1}'), self.pos_grids[i], hw)
            for block in getattr(self, f'block{i + 1}'):
                tokens = self.run_block(block, tokens, hw, token_pad)
            out = tokens
            if self.out_norm and i in self.out_indices:
                out = getattr(self, f'out_norm{i + 1}')(tokens)  # on the output only, not the next stage
            if token_pad is not None:
                # Padded positions leave each stage as zeros, exactly what the next stage's
                # patch embedding sees as zero padding when the image runs alone.
                keep = ~token_pad.unsqueeze(-1)
                tokens, out = tokens * keep, out * keep
                pad_mask = token_pad.reshape(-1, *hw)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *hw)
            # A plain reshape would hand out a channels-last view; mmcv's CPU RoIAlign (and other
            # ops that assume NCHW memory) silently read such tensors wrongly.
            yield x, out.transpose(1, 2).reshape(tokens.shape[0], -1, *hw).contiguous()

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Images (B, C, H, W) [+ pixel padding mask (B, H, W), True = padded] -> tuple of NCHW maps."""
        last = max(self.out_indices)
        outs = []
        for i, (_, feat) in enumerate(self.forward_stages(x, pad_mask)):
            if i in self.out_indices:
                outs.append(feat)
            if i == last:
                break
        return tuple(outs)

    def forward_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-style logits: mean-pooled last stage -> head."""
        if self.head is None:
            raise RuntimeError('this PVT was built with num_classes=0 and has no classification head')
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
