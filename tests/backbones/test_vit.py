import ast
from pathlib import Path

import pytest
import torch

from mmvitattn.backbones.vit import (ArmourViT, CastlingViT, InLineViT, SoftmaxViT, ViT,
                                     convert_vit_checkpoint)
from mmvitattn.backbones.common import resize_pos_embed
from mmvitattn.registry import MODELS

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'inline_official_keys'

# The papers (DeiT, Armour, InLine): parameters with the 1000-class head, in millions.
INLINE_DEIT_PARAMS = {'t': 6.48, 's': 16.73, 'b': 23.80}  # InLine paper, to 0.01M
ARMOUR_PARAMS = {'t': 5.3, 's': 20.3, 'b': 79.5}  # Armour paper, to 0.05M
DEIT_PARAMS = {'t': 5.7, 's': 22.1, 'b': 86.6}  # the same table's DeiT baselines

SMALL = dict(arch='t', depth=2)  # reduced depth for forward/backward tests


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def build_on_meta(cls, **kwargs):
    """Full-size models for counting and layouts only: no memory, no init cost."""
    with torch.device('meta'):
        return cls(**kwargs)


def fixture_layout(name):
    rows = [line.split('\t') for line in (FIXTURES / f'{name}.tsv').read_text().splitlines() if line.strip()]
    return {key: tuple(ast.literal_eval(shape)) for key, shape in rows}


# ---------------------------------------------------------------- paper tables and official layouts
@pytest.mark.parametrize('arch', sorted(INLINE_DEIT_PARAMS))
def test_inline_deit_parameter_count_and_state_dict_match_the_release(arch):
    model = build_on_meta(InLineViT, arch=arch, num_classes=1000)
    assert abs(count_params(model) / 1e6 - INLINE_DEIT_PARAMS[arch]) < 0.01
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = fixture_layout(f'deit_{arch}')
    assert list(ours) == list(official)  # names, in the released order
    assert ours == official  # and shapes (pos_embed at 224 / 288 / 448)


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_armour_and_deit_parameter_counts_match_the_armour_table(arch):
    deit = build_on_meta(SoftmaxViT, arch=arch, num_classes=1000)
    armour = build_on_meta(ArmourViT, arch=arch, num_classes=1000)
    assert abs(count_params(deit) / 1e6 - DEIT_PARAMS[arch]) < 0.05
    assert abs(count_params(armour) / 1e6 - ARMOUR_PARAMS[arch]) < 0.05
    # Sharing W_Q = W_V removes exactly one C x C projection (+ bias) per block.
    c = deit.embed_dim
    assert count_params(deit) - count_params(armour) == 12 * (c * c + c)


def test_castling_vit_adds_only_the_depthwise_token_conv_to_deit():
    deit = build_on_meta(SoftmaxViT, arch='s', num_classes=1000)
    castling = build_on_meta(CastlingViT, arch='s', num_classes=1000)
    assert count_params(castling) - count_params(deit) == 12 * 6 * 9  # blocks x heads x k_res


# ---------------------------------------------------------------- equivalence with timm
def randomized_timm(name, **kwargs):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs).eval()
    with torch.no_grad():  # timm starts norms at 1/0 and biases at 0: make them matter
        for name_, p in ref.named_parameters():
            if 'norm' in name_ or 'bias' in name_:
                p.add_(0.1 * torch.randn_like(p))
    return ref


@pytest.mark.parametrize('name, arch', [('deit_tiny_patch16_224', 't'), ('deit_small_patch16_224', 's')])
def test_softmax_vit_reproduces_timm_deit_features(name, arch):
    ref = randomized_timm(name)
    ours = SoftmaxViT(arch=arch, num_classes=1000, out_type='featmap').eval()
    ours.load_state_dict(convert_vit_checkpoint(ref.state_dict(), ours), strict=True)
    for hw in [(224, 224), (224, 320)]:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            expected = ref.forward_features(x)
            assert (ours.forward_features(x) - expected).abs().max() <= 1e-4
            # The backbone output of the last block (before any pyramid op) is the same map.
            (feat, ) = ours(x)
            grid = expected[:, 1:].transpose(1, 2).reshape(1, -1, hw[0] // 16, hw[1] // 16)
            assert (feat - grid).abs().max() <= 1e-4
            assert (ours.forward_classifier(x) - ref(x)).abs().max() <= 1e-4


def test_position_embedding_resizing_follows_timm_and_the_mode_is_an_option():
    from timm.layers import resample_abs_pos_embed
    ref = randomized_timm('deit_tiny_patch16_224', dynamic_img_pad=True)
    pe = ref.pos_embed.detach()
    for dst in [(14, 20), (9, 7), (30, 30)]:
        torch.testing.assert_close(resize_pos_embed(pe, (14, 14), dst, 1),
                                   resample_abs_pos_embed(pe, dst, (14, 14), num_prefix_tokens=1), rtol=0, atol=0)
    # Inputs not a multiple of 16 are padded like timm's dynamic_img_pad; plain bicubic
    # (antialias off, kernel a=-0.75) is a real alternative, not what timm does.
    x = torch.randn(1, 3, 200, 300)
    for antialias, close in [(True, True), (False, False)]:
        ours = SoftmaxViT(arch='t', interpolate_antialias=antialias).eval()
        ours.load_state_dict(convert_vit_checkpoint(ref.state_dict(), ours), strict=True)
        with torch.no_grad():
            diff = (ours.forward_features(x) - ref.forward_features(x)).abs().max()
        assert (diff <= 1e-4) == close, diff


def test_converter_handles_distilled_deit_and_a_different_pretraining_grid():
    timm = pytest.importorskip('timm')
    ref = timm.create_model('deit_tiny_distilled_patch16_224', pretrained=False)
    sd = ref.state_dict()
    ours = SoftmaxViT(arch='t', num_classes=1000)
    converted = convert_vit_checkpoint({'model': sd}, ours)
    ours.load_state_dict(converted, strict=True)
    torch.testing.assert_close(ours.pos_embed, torch.cat([sd['pos_embed'][:, :1], sd['pos_embed'][:, 2:]], 1))
    # Trained at 224, fine-tuned at 320: the grid is resized, the cls entry kept.
    big = SoftmaxViT(arch='t', pretrain_img_size=320, with_cls_token=True)
    state = convert_vit_checkpoint(ref.state_dict(), big)
    assert state['pos_embed'].shape == (1, 1 + 20 * 20, 192) and 'head.weight' not in state
    torch.testing.assert_close(state['pos_embed'][:, 0], sd['pos_embed'][:, 0])
    big.load_state_dict(state, strict=True)


def test_official_inline_checkpoint_loads_into_a_detection_backbone(tmp_path):
    """A file laid out like the released InLine-DeiT-T loads through init_cfg: only the head and
    the final norm (replaced by per-output norms) are dropped, only the pyramid is new."""
    torch.manual_seed(0)
    official = {k: torch.randn(shape) for k, shape in fixture_layout('deit_t').items()}
    path = tmp_path / 'inline_deit_t.pth'
    torch.save({'model': official, 'epoch': 300}, path)
    model = InLineViT(arch='t', out_type='simple_pyramid', out_norm=True,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    state = convert_vit_checkpoint(torch.load(path), model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(('pyramid.', 'out_norms.')) for k in missing)
    assert set(official) - set(state) == {'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    model.init_weights()
    torch.testing.assert_close(model.blocks[3].attn.residual[2].weight, official['blocks.3.attn.residual.2.weight'])
    torch.testing.assert_close(model.pos_embed, official['pos_embed'])


# ---------------------------------------------------------------- forward / backward and outputs
@pytest.mark.parametrize('cls, kwargs', [
    (InLineViT, {}), (CastlingViT, dict(attn_cfgs=dict(aux_softmax=True))), (ArmourViT, {}), (SoftmaxViT, {}),
    (ViT, dict(attention=('inline', 'softmax'))),
])
def test_every_variant_runs_forward_backward_on_a_non_square_input(cls, kwargs):
    model = cls(**SMALL, out_type='simple_pyramid', **kwargs)
    x = torch.randn(1, 3, 224, 320, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(1, 192, 224 // s, 320 // s) for s in (4, 8, 16, 32)]
    sum(o.sum() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_simple_pyramid_strides_channels_and_norms():
    model = InLineViT(**SMALL, out_type='simple_pyramid', out_channels=(32, 64, 96, 128))
    assert model.out_norm and model.norm is None  # ViTDet: per-level norms, no final norm
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 96, 4, 6), (2, 128, 2, 3)]
    assert all(o.is_contiguous() for o in outs)
    for o in outs:  # each level ends with a LayerNorm over channels
        torch.testing.assert_close(o.mean(dim=1), torch.zeros_like(o[:, 0]), atol=1e-4, rtol=0)


def test_multi_level_takes_one_block_per_output():
    model = InLineViT(arch='t', depth=4, out_type='multi_level', out_indices=(0, 1, 2, -1), out_channels=48)
    outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 48, 64 // s, 96 // s) for s in (4, 8, 16, 32)]
    assert model.out_indices == (0, 1, 2, 3)
    assert ViT(attention='softmax', out_type='multi_level').out_indices == (2, 5, 8, 11)
    # Only the blocks up to the last requested one run and get gradients.
    early = InLineViT(arch='t', depth=4, out_type='multi_level', out_indices=(0, 1, 1, 1),
                      out_strides=(8, 16, 16, 32))
    sum(o.sum() for o in early(torch.randn(1, 3, 64, 64))).backward()
    assert early.blocks[1].norm1.weight.grad is not None and early.blocks[2].norm1.weight.grad is None


def test_featmap_outputs_and_input_not_a_multiple_of_16_is_padded_up():
    model = InLineViT(**SMALL, out_indices=(0, 1))
    outs = model(torch.randn(1, 3, 100, 70))
    assert [tuple(o.shape) for o in outs] == [(1, 192, 7, 5)] * 2
    pyramid = InLineViT(**SMALL, out_type='simple_pyramid')
    assert [o.shape[-2:] for o in pyramid(torch.randn(1, 3, 100, 70))] == [(28, 20), (14, 10), (7, 5), (4, 3)]


def test_without_cls_token():
    model = InLineViT(**SMALL, with_cls_token=False, num_classes=10)
    assert model.cls_token is None and model.pos_embed.shape == (1, 14 * 14, 192)
    assert model.forward_classifier(torch.randn(2, 3, 64, 80)).shape == (2, 10)
    assert model(torch.randn(1, 3, 64, 80))[0].shape == (1, 192, 4, 5)


@pytest.mark.parametrize('attention', ['inline', 'softmax', 'armour'])
def test_padded_pixels_do_not_reach_real_tokens(attention):
    """With the pad mask, what lies in the padded area makes no difference (same run-time grid)."""
    model = ViT(attention=attention, **SMALL).eval()
    x = torch.randn(1, 3, 64, 96)
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[:, :, 64:] = True
    mask[:, 48:, :] = True
    noisy = torch.where(mask[:, None], torch.randn_like(x) * 5, x)
    with torch.no_grad():
        a, b = model(x, mask)[0], model(noisy, mask)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a[..., 3:, :].abs().max() == 0 and a[..., 4:].abs().max() == 0  # padded cells are zeroed
    assert not torch.allclose(model(noisy)[0], a, atol=1e-3)  # without the mask the noise leaks


# ---------------------------------------------------------------- backbone options
def test_frozen_stages_freeze_the_embedding_and_the_first_blocks():
    model = InLineViT(arch='t', depth=3, frozen_stages=1, drop_path_rate=0.1)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(('patch_embed.', 'blocks.0.')) or n in ('cls_token', 'pos_embed')}
    assert not model.patch_embed.training and not model.blocks[0].training
    assert model.blocks[1].training and model.norm.training
    everything = InLineViT(arch='t', depth=2, frozen_stages=2)
    assert not any(p.requires_grad for p in everything.parameters())


def test_drop_path_rate_rises_from_zero():
    assert InLineViT(**SMALL, drop_path_rate=0.5).blocks[0].drop_path.__class__.__name__ == 'Identity'


def test_registry_names_and_per_block_attention():
    from mmvitattn.attention import InLineAttention, SoftmaxAttention
    # _scope_: a test that ran before may have left mmdet's scope as the default.
    model = MODELS.build(dict(type='InLineDeiT', arch='s', depth=1, _scope_='mmvitattn'))
    assert model.embed_dim == 320 and model.num_heads == 10 and model.pos_embed.shape[1] == 18 * 18 + 1
    assert isinstance(MODELS.build(dict(type='mmvitattn.DeiT', arch='b', depth=1)).blocks[0].attn,
                      SoftmaxAttention)
    assert MODELS.build(dict(type='ArmourViT', arch='s', depth=1, _scope_='mmvitattn')).embed_dim == 384
    mixed = ViT(arch='t', depth=2, attention=['inline', 'softmax'])
    assert isinstance(mixed.blocks[0].attn, InLineAttention) and isinstance(mixed.blocks[1].attn, SoftmaxAttention)
    assert mixed.blocks[0].norm1.eps == 1e-6  # DeiT's LayerNorm epsilon


@pytest.mark.parametrize('kwargs, message', [
    (dict(attention='linformer'), "unknown attention type 'linformer'"),
    (dict(attention=('inline', 'inline')), r'attention needs one entry per block \(12\)'),
    (dict(), 'ViT needs attention=<name>'),
    (dict(attention='inline', num_heads=5), 'num_heads=5 does not divide the embedding width 192'),
    (dict(attention='inline', arch='xl'), "unknown ViT arch 'xl'"),
    (dict(attention='inline', arch=None, embed_dim=64), 'arch=None needs explicit depth, num_heads'),
    (dict(attention='inline', out_indices=(12, )), 'out_indices entry 12'),
    (dict(attention='inline', frozen_stages=13), 'frozen_stages=13'),
    (dict(attention='inline', out_type='fpn'), "unknown out_type 'fpn'"),
    (dict(attention='inline', out_type='simple_pyramid', out_indices=(5, 11)), 'expected a single index'),
    (dict(attention='inline', out_type='multi_level', out_strides=(4, 64, 16, 32)), 'out_strides entry 64'),
    (dict(attention='inline', out_type='multi_level', out_strides=(8, 16)),
     r'one out_strides entry per out index \(4\)'),
    (dict(attention='inline', out_type='simple_pyramid', out_channels=(64, 64)),
     r'out_channels needs one entry per output \(4\)'),
    (dict(attention='inline', out_channels=256), "out_type='featmap' returns the 192-wide maps"),
    (dict(attention='inline', interpolate_mode='area'), "unknown interpolate_mode 'area'"),
])
def test_bad_configuration_fails_at_build_time_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViT(**kwargs)


def test_bad_inputs_fail_with_a_clear_message():
    model = InLineViT(**SMALL)
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\)'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='pad_mask must have shape'):
        model(torch.randn(1, 3, 64, 64), torch.zeros(1, 32, 32, dtype=torch.bool))
    with pytest.raises(RuntimeError, match='no classification head'):
        model.forward_classifier(torch.randn(1, 3, 64, 64))
