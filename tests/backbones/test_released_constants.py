"""Every size-dependent constant of each family, pinned against the released code it follows.

References (one per family, named again in each backbone's docstring):
- PVT / InLine-PVT: whai362/PVT ``classification/pvt.py`` and ``detection/pvt.py``; LeapLabTHU/InLine
  ``models/inline_pvt.py`` (factories pass ``norm_layer=partial(nn.LayerNorm, eps=1e-6)``; position
  embeddings ``F.interpolate(..., mode="bilinear")``, i.e. align_corners=False, no antialias).
- Swin / InLine-Swin: microsoft/Swin-Transformer ``models/swin_transformer.py``; LeapLabTHU/InLine
  ``models/inline_swin.py`` + ``cfgs/inline_swin_*.yaml`` (``WINDOW_SIZE: 56`` / ``96``; softmax blocks
  use ``max(7, WINDOW_SIZE // 8)``; ``if min(input_resolution) <= window_size``: one window, no shift).
- ViT / DeiT / InLine-DeiT: timm ``vision_transformer.py`` (eps 1e-6, ``resample_abs_pos_embed``:
  bicubic with antialias); LeapLabTHU/InLine ``models/inline_deit.py``.
- CSwin / InLine-CSwin: microsoft/CSWin-Transformer ``models/cswin.py``; LeapLabTHU/InLine
  ``models/inline_cswin.py`` (``split_size=[1, 2, 7, 7]``, InLine stages ``56-28-14-7``: global).
- LeViT: facebookresearch/LeViT ``levit.py`` / timm ``levit.py`` (BatchNorm eps 1e-5, Hardswish,
  queries subsampled at even positions).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmvitattn.backbones import InLineCSwin, InLinePVT, InLineSwin, InLineViT, LeViT, SoftmaxPVT, SoftmaxViT
from mmvitattn.backbones.swin import released_window_size


def layer_norm_eps(module):
    return {name: m.eps for name, m in module.named_modules() if isinstance(m, nn.LayerNorm)}


def bilinear_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) weights of 1-D linear interpolation with half-pixel centres (align_corners=False):
    output i samples src coordinate (i + 0.5) * src / dst - 0.5, clamped at 0; no antialias filter."""
    weights = torch.zeros(dst, src, dtype=torch.float64)
    for i in range(dst):
        pos = max((i + 0.5) * src / dst - 0.5, 0.0)
        lo = min(int(math.floor(pos)), src - 1)
        hi = min(lo + 1, src - 1)
        frac = pos - lo
        weights[i, lo] += 1 - frac
        weights[i, hi] += frac
    return weights


def bilinear_reference(pos_embed: torch.Tensor, src_hw, dst_hw) -> torch.Tensor:
    """(1, h*w, C) embedding resized separably with :func:`bilinear_matrix`: rows, then columns."""
    c = pos_embed.shape[-1]
    grid = pos_embed.double().reshape(*src_hw, c)
    rows, cols = bilinear_matrix(src_hw[0], dst_hw[0]), bilinear_matrix(src_hw[1], dst_hw[1])
    out = torch.einsum('ys,stc,xt->yxc', rows, grid, cols)
    return out.reshape(1, dst_hw[0] * dst_hw[1], c)


# ---------------------------------------------------------------- PVT / InLine-PVT
def test_pvt_layer_norm_eps_is_the_released_1e6_in_blocks_and_1e5_in_patch_embeddings():
    for model in (InLinePVT(arch='t'), SoftmaxPVT(arch='t')):
        eps = layer_norm_eps(model)
        blocks = {k: v for k, v in eps.items() if k.startswith('block') and '.attn.' not in k}
        assert blocks and set(blocks.values()) == {1e-6}, blocks
        embeds = {k: v for k, v in eps.items() if k.startswith('patch_embed')}
        assert len(embeds) == 4 and set(embeds.values()) == {1e-5}
        reductions = {k: v for k, v in eps.items() if '.attn.' in k}
        assert set(reductions.values()) <= {1e-5}  # SRA's norm (PVTv1: plain nn.LayerNorm)
    assert layer_norm_eps(SoftmaxPVT(arch='t'))['block1.0.attn.norm'] == 1e-5


def test_inline_pvt_has_no_spatial_reduction_and_pools_the_last_stage():
    # InLine's config: PVT_LA_SR_RATIOS 1111, so the InLine blocks see every token; no final norm.
    model = InLinePVT(arch='t', num_classes=10)
    assert not any(n.endswith('.sr') or '.sr.' in n for n, _ in model.named_modules())
    assert not hasattr(model, 'norm') and model.head.in_features == 512


def test_pvt_position_embedding_rule_is_bilinear_without_antialias():
    model = InLinePVT(arch='t')
    assert model.interpolation == dict(mode='bilinear', antialias=False)


@pytest.mark.parametrize('stage, hw', [(0, (40, 60)), (2, (9, 13))])
def test_inline_pvt_resized_position_embedding_equals_an_explicit_bilinear_reference(stage, hw):
    torch.manual_seed(0)
    model = InLinePVT(arch='t')
    grid = model.pos_grids[stage]
    pos = getattr(model, f'pos_embed{stage + 1}').detach()
    expected = bilinear_reference(pos, grid, hw)
    torch.testing.assert_close(model.stage_pos_embed(stage, hw).double(), expected, atol=1e-6, rtol=1e-6)
    # The old rule (bicubic + antialias, timm's ViT rule) is measurably another function.
    old = F.interpolate(pos.reshape(1, *grid, -1).permute(0, 3, 1, 2), size=hw, mode='bicubic',
                        antialias=True).permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
    assert (old.double() - expected).abs().max() > 1e-3


def test_inline_pvt_forward_adds_exactly_the_bilinear_embedding():
    """End to end: with a silenced patch embedding, what enters stage 1's first block is the
    position embedding the forward pass resized for the 160 x 240 input (a 40 x 60 map)."""
    torch.manual_seed(0)
    model = InLinePVT(arch='t', out_indices=(0, )).eval()
    with torch.no_grad():
        for p in model.patch_embed1.parameters():
            p.zero_()
    seen = []
    model.block1[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.randn(1, 3, 160, 240))
    expected = bilinear_reference(model.pos_embed1.detach(), (56, 56), (40, 60))
    torch.testing.assert_close(seen[0].double(), expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- Swin / InLine-Swin
def test_swin_softmax_window_is_the_released_rule():
    # InLine: WINDOW_SIZE is the stage-1 map (56 at 224, 96 at 384); softmax blocks: max(7, W // 8).
    assert released_window_size(224) == 7 and released_window_size(384) == 12
    for arch in 'tsb':  # reduced depths: the window does not depend on them
        model = InLineSwin(arch=arch, depths=(1, 1, 3, 1))
        windows = {blk.attn.window_size for layer in model.layers for blk in layer.blocks
                   if blk.attn.attention_name == 'swin_window'}
        assert windows == {7}, (arch, windows)
    model = InLineSwin(arch='b', depths=(1, 1, 3, 1), pretrain_img_size=384)
    assert {blk.attn.window_size for blk in model.layers[3].blocks} == {12}


def test_swin_window_and_shift_per_stage_at_the_training_sizes():
    """224: stage 3 (14 x 14) runs 2 x 2 windows of 7, shifted by 3 on odd blocks; stage 4 (7 x 7) is
    one unshifted window. 384 (window 12): stage 3 (24 x 24) shifted by 6, stage 4 (12 x 12) one window."""
    model = InLineSwin(arch='s', depths=(2, 2, 4, 2))
    stage3, stage4 = model.layers[2].blocks, model.layers[3].blocks
    assert [b.attn.window_and_shift((14, 14)) for b in stage3[:2]] == [((7, 7), (0, 0)), ((7, 7), (3, 3))]
    assert [b.attn.window_and_shift((7, 7)) for b in stage4] == [((7, 7), (0, 0))] * 2
    big = InLineSwin(arch='b', depths=(2, 2, 4, 2), pretrain_img_size=384)
    assert big.layers[2].blocks[3].attn.window_and_shift((24, 24)) == ((12, 12), (6, 6))
    assert big.layers[3].blocks[1].attn.window_and_shift((12, 12)) == ((12, 12), (0, 0))


def test_swin_layer_norm_eps_and_table_interpolation():
    assert set(layer_norm_eps(InLineSwin(arch='t', num_classes=10)).values()) == {1e-5}
    # Swin's load_pretrained: bicubic over the (2w-1) x (2w-1) offset grid, align_corners=False.
    from mmvitattn.backbones.swin import resize_relative_position_table
    table = torch.randn(23 * 23, 2)
    expected = F.interpolate(table.t().reshape(1, 2, 23, 23), size=(13, 13), mode='bicubic', align_corners=False)
    torch.testing.assert_close(resize_relative_position_table(table, 7), expected.reshape(2, 169).t())


# ---------------------------------------------------------------- ViT / DeiT / InLine-DeiT
def test_deit_constants_are_timm_s():
    model = SoftmaxViT(arch='t', num_classes=10, drop_path_rate=0.1)
    assert set(layer_norm_eps(model).values()) == {1e-6}
    assert (model.interpolate_mode, model.interpolate_antialias) == ('bicubic', True)
    # Drop path rises linearly from 0 over the blocks (timm: linspace(0, rate, depth)).
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for b in model.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 12))
    # The released InLine-DeiT sizes and training grids (224 / 288 / 448).
    assert [InLineViT(arch=a).pos_grid for a in 'tsb'] == [(14, 14), (18, 18), (28, 28)]


# ---------------------------------------------------------------- CSwin / InLine-CSwin
def test_cswin_constants_are_the_released_ones():
    model = InLineCSwin(arch='t', num_classes=10)
    assert model.split_sizes == (1, 2, 7, None)  # split_size=[1, 2, 7, 7]; the last stage is global
    assert set(layer_norm_eps(model).values()) == {1e-5}
    stem = model.stage1_conv_embed[0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((7, 7), (4, 4), (2, 2))
    merge = model.merge1.conv
    assert (merge.kernel_size, merge.stride, merge.padding) == ((3, 3), (2, 2), (1, 1))
    # InLine stages are one global branch (la_split_size 56-28-14-7 = the whole map at 224).
    assert [len(model.stage1[0].attns), len(model.stage3[0].attns), len(model.stage4[0].attns)] == [1, 2, 1]


# ---------------------------------------------------------------- LeViT
def test_levit_constants_are_the_released_ones():
    model = LeViT(arch='128s', num_classes=10)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and {m.eps for m in norms} == {1e-5}
    acts = {type(m) for m in model.modules() if isinstance(m, (nn.GELU, nn.ReLU, nn.Hardswish, nn.SiLU))}
    assert acts == {nn.Hardswish}
    # Queries subsampled at even positions: a 7 x 7 map shrinks to 4 x 4 (ceil), as at 224.
    maps = model(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[-2:]) for m in maps] == [(14, 14), (7, 7), (4, 4)]


def test_levit_drops_every_residual_branch_at_one_rate():
    # LeViT's Residual(m, drop_path) and timm's LevitResidual get the same rate everywhere.
    from timm.layers import DropPath
    model = LeViT(arch='128s', drop_path_rate=0.1)
    rates = {m.drop_prob for m in model.modules() if isinstance(m, DropPath)}
    assert rates == {0.1}
