"""Pretrained weights into every backbone: the official InLine files, timm's, and our own."""
import ast
import os
import sys
from pathlib import Path

import pytest
import torch

from mmvitattn.backbones import (ArmourViT, CastlingViT, InLineCSwin, InLinePVT, InLineSwin, InLineViT, LeViT,
                                 SoftmaxViT)
from mmvitattn.checkpoint import CheckpointReadError, UnsafeCheckpointError, load_pretrained

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'inline_official_keys'
YACS_STAND_IN = '''
class CfgNode(dict):
    """Pickles like yacs' CfgNode: a dict subclass carrying flags in its __dict__."""
    def __init__(self, init_dict=None):
        super().__init__({k: CfgNode(v) if type(v) is dict else v for k, v in (init_dict or {}).items()})
        self.__dict__['__immutable__'] = True
'''


def official_layout(name):
    rows = [line.split('\t') for line in (FIXTURES / f'{name}.tsv').read_text().splitlines() if line.strip()]
    return {key: tuple(ast.literal_eval(shape)) for key, shape in rows}


def random_state(layout, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) if len(shape) else torch.tensor(3) for k, shape in layout.items()}


@pytest.fixture(scope='module')
def released_file_writer(tmp_path_factory):
    """Writes a file wrapped like the released ones: ``model`` (+ ``state_dict_ema`` for CSwin),
    optimizer state and a pickled yacs config; yacs itself is not importable when loading."""
    root = tmp_path_factory.mktemp('released')
    package = root / 'pkgs' / 'yacs'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'config.py').write_text(YACS_STAND_IN)

    def write(name, model_state, ema_state=None):
        sys.path.insert(0, str(root / 'pkgs'))
        try:
            from yacs.config import CfgNode
            content = {'model': model_state, 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3}]},
                       'lr_scheduler': {'last_epoch': 299}, 'max_accuracy': 80.2, 'epoch': 299,
                       'config': CfgNode({'MODEL': {'TYPE': name, 'NUM_CLASSES': 1000}})}
            if ema_state is not None:
                content['state_dict_ema'] = ema_state
            path = root / f'{name}.pth'
            torch.save(content, path)
        finally:
            sys.path.remove(str(root / 'pkgs'))
            for mod in ('yacs.config', 'yacs'):
                sys.modules.pop(mod, None)
        return path

    return write


# Every released layout, the detection backbone it is meant for, and what that backbone has that
# the classifier does not (per-output norms, the DeiT pyramid).
RELEASED = {
    'deit_t': lambda: InLineViT(arch='t', out_type='simple_pyramid', out_norm=True),
    'deit_s': lambda: InLineViT(arch='s', out_type='simple_pyramid', out_norm=True),
    'deit_b': lambda: InLineViT(arch='b', out_type='simple_pyramid', out_norm=True),
    'pvt_t': lambda: InLinePVT(arch='t', out_norm=True),
    'pvt_s': lambda: InLinePVT(arch='s', out_norm=True),
    'pvt_m': lambda: InLinePVT(arch='m', out_norm=True),
    'pvt_l': lambda: InLinePVT(arch='l', out_norm=True),
    'swin_t': lambda: InLineSwin(arch='t', out_norm=True),
    'swin_s': lambda: InLineSwin(arch='s', out_norm=True),
    'swin_b': lambda: InLineSwin(arch='b', out_norm=True),
    'swin_b_384': lambda: InLineSwin(arch='b', window_size=12, out_norm=True),
    'cswin_t': lambda: InLineCSwin(arch='t', out_norm=True),
    'cswin_s': lambda: InLineCSwin(arch='s', out_norm=True),
    'cswin_b': lambda: InLineCSwin(arch='b', out_norm=True),
    'cswin_b_384': lambda: InLineCSwin(arch='b', split_sizes=(1, 2, 12, None), out_norm=True),
}
DOCUMENTED_DROPS = ('head.', 'norm.')  # the classifier and its final norm (per-output norms instead)
DERIVED = ('relative_position_index', 'attn_mask')
NEW_IN_BACKBONE = ('out_norm', 'pyramid.', 'out_norms.')


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_every_released_layout_loads_with_only_the_documented_drops(name, released_file_writer):
    layout = official_layout(name)
    weights = random_state(layout, seed=1)
    ema = random_state(layout, seed=2) if name.startswith('cswin') else None
    path = released_file_writer(f'inline_{name}', weights, ema)
    model = RELEASED[name]()
    model.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()  # the path a config takes

    report = load_pretrained(model, str(path), logger=None)
    assert report.entry == 'model'
    assert report.converted == {} and report.resized == {}
    assert all(k.startswith(DOCUMENTED_DROPS) or k.endswith(DERIVED) for k in report.dropped), report.dropped
    assert any(k.startswith('head.') for k in report.dropped)
    assert all(k.startswith(NEW_IN_BACKBONE) for k in report.new), report.new
    own = model.state_dict()
    assert sorted(report.copied) == sorted(k for k in layout if k in own)
    for key in report.copied:
        assert torch.equal(own[key], weights[key]), key
    if ema is not None:
        report = load_pretrained(model, str(path), use_ema=True, logger=None)
        assert report.entry == 'state_dict_ema'
        key = next(k for k in weights if k.endswith('residual.2.weight'))
        assert torch.equal(model.state_dict()[key], ema[key]) and not torch.equal(ema[key], weights[key])
        # A file with only EMA weights (as the CSWin releases) is read from that entry.
        report = load_pretrained(model, {'state_dict_ema': ema, 'epoch': 300}, logger=None)
        assert report.entry == 'state_dict_ema' and torch.equal(model.state_dict()[key], ema[key])


def test_the_384_swin_loads_into_a_window_7_backbone_with_resized_tables(released_file_writer):
    weights = random_state(official_layout('swin_b_384'), seed=3)
    model = InLineSwin(arch='b', out_norm=True)
    report = load_pretrained(model, str(released_file_writer('inline_swin_b_384', weights)), logger=None)
    tables = [k for k in weights if k.endswith('relative_position_bias_table')]
    assert set(report.resized) == set(tables) and report.resized[tables[0]] == ((529, 16), (169, 16))
    expected = torch.nn.functional.interpolate(weights[tables[0]].t().reshape(1, 16, 23, 23), size=(13, 13),
                                               mode='bicubic', align_corners=False).reshape(16, 169).t()
    torch.testing.assert_close(model.state_dict()[tables[0]], expected)


def test_a_checkpoint_of_another_size_is_refused_before_loading(released_file_writer):
    path = released_file_writer('inline_deit_s', random_state(official_layout('deit_s'), seed=4))
    model = InLineViT(arch='t')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r'does not fit InLineViT .*another model size.*file \(320, 3, 16, 16\)'):
        load_pretrained(model, str(path), logger=None)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------- files that are not weights
def test_truncated_and_foreign_files_give_one_error_naming_the_file(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'model': {'w': torch.randn(64, 64)}}, good)
    data = good.read_bytes()
    cases = {'truncated.pth': data[:len(data) // 2], 'empty.pth': b'', 'notes.pth': b'not a checkpoint at all\n',
             'weights.safetensors': b'\x00garbage'}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointReadError, match=f'could not read checkpoint .*{name}'):
            load_pretrained(InLinePVT(arch='t', depths=(1, 1, 1, 1)), str(tmp_path / name), logger=None)


def test_a_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / 'ran'

    class RunsACommand:
        def __reduce__(self):
            return os.system, (f'touch {marker}', )

    path = tmp_path / 'evil.pth'
    torch.save({'model': {'pos_embed1': torch.zeros(1)}, 'config': RunsACommand()}, path)
    model = InLinePVT(arch='t', depths=(1, 1, 1, 1), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(UnsafeCheckpointError, match='system'):
        model.init_weights()
    assert not marker.exists()


def test_missing_file_says_where_it_looked_and_how_to_go_on(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'pretrained checkpoint not found: .*nothere\.pth.*init_cfg=None'):
        load_pretrained(InLinePVT(arch='t', depths=(1, 1, 1, 1)), str(tmp_path / 'nothere.pth'))


# ---------------------------------------------------------------- timm
def timm_model(name, **kwargs):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def test_timm_deit_checkpoint_equals_timm_after_position_embedding_resizing(tmp_path):
    """timm's training-script file (args pickled, EMA too) -> our DeiT. At a non-square input our
    run-time resize equals timm's load-time resize; a 384 backbone resizes on load like timm."""
    import argparse

    from timm.models.vision_transformer import checkpoint_filter_fn
    source = timm_model('deit_tiny_patch16_224')
    path = tmp_path / 'model_best.pth.tar'
    torch.save({'epoch': 10, 'arch': 'deit_tiny_patch16_224', 'state_dict': source.state_dict(),
                'state_dict_ema': source.state_dict(), 'args': argparse.Namespace(model='deit_tiny', lr=5e-4)}, path)
    for size, pretrain in (((224, 320), 224), ((384, 384), 384)):
        reference = timm_model('deit_tiny_patch16_224', img_size=size)
        reference.load_state_dict(checkpoint_filter_fn(source.state_dict(), reference))
        ours = SoftmaxViT(arch='deit-t', pretrain_img_size=pretrain, out_indices=(11, ), final_norm=True)
        report = load_pretrained(ours, str(path), logger=None)
        grid = (pretrain // 16)**2 + 1
        assert report.resized == ({} if pretrain == 224 else {'pos_embed': ((1, 197, 192), (1, grid, 192))})
        assert set(report.dropped) == {'head.weight', 'head.bias'} and report.new == []
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert (ours.forward_features(x) - reference.forward_features(x)).abs().max() <= 1e-4


def test_timm_swin_into_a_larger_window_resizes_tables_bicubically():
    """Tables are resized as the official Swin fine-tuning code does (bicubic over the offset
    grid); timm's own filter uses a different (geometric) interpolation, so the two disagree
    slightly (~1e-4) after resizing. At the trained window they agree exactly (test_swin)."""
    from mmvitattn.backbones import SoftmaxSwin
    source = timm_model('swin_tiny_patch4_window7_224').state_dict()
    ours = SoftmaxSwin(arch='t', window_size=8, num_classes=1000)
    report = load_pretrained(ours, source, logger=None)
    assert len(report.resized) == 12 and report.new == []
    key = 'layers.2.blocks.4.attn.relative_position_bias_table'
    assert report.resized[key] == ((169, 12), (225, 12))
    expected = torch.nn.functional.interpolate(source[key].t().reshape(1, 12, 13, 13), size=(15, 15),
                                               mode='bicubic', align_corners=False).reshape(12, 225).t()
    torch.testing.assert_close(ours.state_dict()[key], expected)


# ---------------------------------------------------------------- warm starts of other attentions
def test_softmax_deit_warm_starts_inline_castling_and_armour():
    state = timm_model('deit_tiny_patch16_224').state_dict()
    inline = InLineViT(arch='deit-t', out_indices=(11, ))
    report = load_pretrained(inline, state, logger=None)
    assert all('.attn.residual.' in k for k in report.new) and len(report.new) == 12 * 4
    assert torch.equal(inline.blocks[5].attn.qkv.weight, state['blocks.5.attn.qkv.weight'])

    castling = CastlingViT(arch='deit-t', out_indices=(11, ))
    report = load_pretrained(castling, state, logger=None)
    assert report.new == [f'blocks.{i}.attn.dconv.weight' for i in sorted(range(12), key=str)]

    armour = ArmourViT(arch='deit-t', out_indices=(11, ))
    report = load_pretrained(armour, state, logger=None)
    assert report.new == [] and report.converted['blocks.0.attn.kv.weight'] == 'blocks.0.attn.qkv.weight'
    assert torch.equal(armour.blocks[3].attn.kv.weight, state['blocks.3.attn.qkv.weight'][192:])
    assert torch.equal(armour.blocks[3].attn.kv.bias, state['blocks.3.attn.qkv.bias'][192:])


@pytest.mark.parametrize('attention', ['armour', 'armour_plus'])
def test_softmax_levit_warm_starts_armour_from_the_value_projection(attention):
    source = timm_model('levit_128s')
    state = source.state_dict()
    model = LeViT(arch='128s', attention=attention)
    report = load_pretrained(model, state, logger=None)
    assert report.new == []
    name = 'stages.0.blocks.0.attn'  # 4 heads, key_dim 16, v 32 per head
    src = state[f'{name}.qkv.linear.weight'].view(4, 64, -1)
    dst_name = f'{name}.{"qk" if attention == "armour_plus" else "qkv"}.linear.weight'
    dst = model.state_dict()[dst_name].view(4, -1, src.shape[-1])
    assert torch.equal(dst[:, :16], src[:, 32:48])  # shared q <- v[:16]
    assert torch.equal(dst[:, 16:32], src[:, 16:32])  # k <- k
    if attention == 'armour':
        assert torch.equal(dst[:, 32:], src[:, 48:])  # own v <- v[16:]
    assert report.converted[dst_name] == f'{name}.qkv.linear.weight'


# ---------------------------------------------------------------- our own training output
def test_our_detector_checkpoint_loads_its_backbone(tmp_path):
    backbone = InLinePVT(arch='t', depths=(1, 1, 1, 1), out_norm=True)
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(4, 4, 1, 1)
    path = tmp_path / 'iter_100.pth'
    torch.save({'meta': {'iter': 100}, 'state_dict': state, 'message_hub': {}}, path)
    fresh = InLinePVT(arch='t', depths=(1, 1, 1, 1), out_norm=True)
    report = load_pretrained(fresh, str(path), logger=None)
    assert report.dropped == {'neck.lateral_convs.0.conv.weight': "outside prefix 'backbone.'"}
    assert report.new == [] and len(report.copied) == len(backbone.state_dict())
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in backbone.state_dict().items())


# ---------------------------------------------------------------- resizing to the configured size
def test_pvt_position_embeddings_resize_to_the_configured_size_and_pvt_v1_cls_slot_is_dropped():
    layout = official_layout('pvt_t')
    weights = random_state(layout, seed=5)
    weights['pos_embed4'] = torch.randn(1, 50, 512)  # PVTv1's last stage: a cls slot + 7x7
    model = InLinePVT(arch='t', pretrain_img_size=320)
    report = load_pretrained(model, {'model': weights}, logger=None)
    assert report.resized['pos_embed1'] == ((1, 3136, 64), (1, 6400, 64))
    assert report.resized['pos_embed4'] == ((1, 50, 512), (1, 100, 512))
    # The released PVT / InLine-PVT rule: bilinear, align_corners=False, no antialias.
    grid = weights['pos_embed1'].reshape(1, 56, 56, 64).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(80, 80), mode='bilinear', align_corners=False)
    torch.testing.assert_close(model.pos_embed1, expected.flatten(2).transpose(1, 2))
    grid = weights['pos_embed4'][:, 1:].reshape(1, 7, 7, 512).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(10, 10), mode='bilinear', align_corners=False)
    torch.testing.assert_close(model.pos_embed4, expected.flatten(2).transpose(1, 2))


def test_levit_attention_biases_resize_to_the_configured_grid():
    state = timm_model('levit_128s').state_dict()
    model = LeViT(arch='128s', pretrain_img_size=320)
    report = load_pretrained(model, state, logger=None)
    key = 'stages.0.blocks.0.attn.attention_biases'
    assert report.resized[key] == ((4, 196), (4, 400))
    old, new = state[key].view(4, 14, 14), model.state_dict()[key].view(4, 20, 20)
    # Corner-aligned: offset 0 and the largest offset keep their values.
    torch.testing.assert_close(new[:, 0, 0], old[:, 0, 0])
    torch.testing.assert_close(new[:, -1, -1], old[:, -1, -1])
