"""Every ``attention=`` / ``attn_cfgs=`` example written in the README and in the package's
docstrings is executed here as written, in the families it speaks of; one grammar for all."""
import re
from pathlib import Path

import pytest
import timm
import torch

import mmvitattn  # noqa: F401 (registers the timm names)
from mmvitattn.attention import CastlingAttention, SpatialReductionAttention, TokenMixer
from mmvitattn.backbones import CastlingPVT, CastlingSwin, CastlingViT, Swin

from small_families import FAMILIES, FOUR_STAGE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = re.compile(r'``?((?:attn_cfgs|attention)=[^`]+)``?')


def documented_examples():
    """(file, example) for every inline-code ``attention=...`` / ``attn_cfgs=...``."""
    files = [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md')), *sorted((ROOT / 'mmvitattn').rglob('*.py')),
             *sorted((ROOT / 'tools').rglob('*.py'))]
    found = set()
    for path in files:
        for example in EXAMPLE.findall(path.read_text()):
            found.add(example)
    return found


def castlings(model):
    return [m for m in model.modules() if isinstance(m, CastlingAttention)]


def aux_on(model):
    mods = castlings(model)
    assert mods and all(m.aux_softmax for m in mods)


def aux_on_last_two_stages(model):
    flags = [[m.aux_softmax for m in stage.modules() if isinstance(m, CastlingAttention)]
             for stage in stages_of(model)]
    assert flags[0] and not any(flags[0] + flags[1]) and all(flags[2] + flags[3])


def stages_of(model):
    if hasattr(model, 'layers'):  # Swin
        return [layer.blocks for layer in model.layers]
    if hasattr(model, 'blocks'):  # ViT: blocks are the stages
        return list(model.blocks)
    prefix = 'block' if hasattr(model, 'block1') else 'stage'
    return [getattr(model, f'{prefix}{i}') for i in range(1, 5)]


def mixer_name(module):
    """The attention a module computes, or None for modules that are no token mixer."""
    return module.attention_name if isinstance(module, TokenMixer) else None


def kinds(model):
    return [[type(m.attn).attention_name for m in stage] for stage in stages_of(model)]


SMALL_SWIN_B = dict(arch=None, embed_dims=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8))


def castling_everywhere(kwargs, check):
    """Every family with Castling attention, small, plus the Castling classes at their arch."""
    models = [FAMILIES[f](attention='castling', **kwargs) for f in FAMILIES]
    models += [CastlingPVT(arch='t', **kwargs), CastlingViT(arch='t', **kwargs), CastlingSwin(arch='t', **kwargs)]
    for model in models:
        check(model)
    return models


def castling_four_stages(kwargs, check):
    models = [FAMILIES[f](attention='castling', **kwargs) for f in FOUR_STAGE]
    models.append(CastlingPVT(arch='t', **kwargs))  # (CastlingSwin-T's stage 4 has no Castling block)
    for model in models:
        check(model)
    return models


def timm_castlings(kwargs, check):
    models = [timm.create_model(name, num_classes=5, **kwargs) for name in ('castling_pvt_t', 'castling_deit_t')]
    for model in models:
        check(model)
    return models


def swin(expected):
    def run(kwargs, check=None):
        model = Swin(**{**SMALL_SWIN_B, **kwargs})
        assert kinds(model) == expected
        return [model]
    return run


def every_family(expected_kind):
    def run(kwargs):
        models = [FAMILIES[f](**kwargs) for f in FAMILIES]
        for model in models:
            names = {mixer_name(m) for m in model.modules()} - {None}
            assert names == {expected_kind}, names
        return models
    return run


def pvt_mixed(kwargs):
    model = FAMILIES['pvt'](**kwargs)
    assert kinds(model) == [['sra'], ['sra'], ['inline'], ['inline']]
    return [model]


def pvt_stage_options(kwargs):
    model = FAMILIES['pvt'](attention=('inline', 'inline', 'castling', 'sra'), **kwargs)
    (sra, ), (castling, ) = ([m for m in model.block4.modules() if isinstance(m, SpatialReductionAttention)],
                             castlings(model))
    assert sra.sr_ratio == 2 and castling.aux_softmax
    return [model]


def pvt_v2_sra(kwargs):
    from mmvitattn.backbones.pvt import PVTv2
    model = PVTv2(arch='b0', **kwargs)
    assert kinds(model) == [['sra'] * 2] * 4
    return [model]


def cswin_stripe_padding(kwargs):
    """Every family's stripes (CSwin's own and the 'cswin' mixer elsewhere) take the option."""
    from mmvitattn.attention.cswin import LePEAttention
    models = [FAMILIES[f](attention='cswin', **kwargs) for f in FAMILIES]
    for model in models:
        stripes = [m for m in model.modules() if isinstance(m, LePEAttention)]
        assert stripes and all(m.center for m in stripes)
    return models


def levit_plain_linears(kwargs):
    """LeViT's stages give a registered mixer BN-linear projections unless told otherwise."""
    model = FAMILIES['levit'](attention='inline', **kwargs)
    attn = model.stages[0].blocks[0].attn
    assert attn.qkv_layout == 'qkv' and isinstance(attn.qkv, torch.nn.Linear)
    return [model]


def swin_shift_first(kwargs):
    model = Swin(**{**SMALL_SWIN_B, 'attention': 'S', **kwargs})
    windows = [m.attn for stage in stages_of(model) for m in stage]
    assert all(w.shift_first for w in windows)
    return [model]


III_S = [['inline'] * 2, ['inline'] * 2, ['inline'] * 4, ['swin_window'] * 2]
EXAMPLES = {
    "attn_cfgs=dict(aux_softmax=True)": lambda kw: castling_everywhere(kw, aux_on),
    "attn_cfgs=dict(castling=dict(aux_softmax=True))":
        lambda kw: castling_everywhere(kw, aux_on) + timm_castlings(kw, aux_on),
    "attn_cfgs=[{}, {}, dict(aux_softmax=True), dict(aux_softmax=True)]":
        lambda kw: castling_four_stages(kw, aux_on_last_two_stages),
    "attn_cfgs=[{}, {}, dict(aux_softmax=True), dict(sr_ratio=2)]": pvt_stage_options,
    "attn_cfgs=dict(swin_window=dict(shift_first=True))": swin_shift_first,
    "attn_cfgs=dict(stripe_padding='center')": cswin_stripe_padding,
    "attn_cfgs=dict(qkv_layout='qkv')": levit_plain_linears,
    "attention='inline'": every_family('inline'),
    "attention='sra'": pvt_v2_sra,
    "attention='S'": swin([['swin_window'] * 2, ['swin_window'] * 2, ['swin_window'] * 4, ['swin_window'] * 2]),
    "attention='IIIS'": swin(III_S),
    "attention=('I', 'I', 'I', 'S')": swin(III_S),
    "attention=('I', 'I', ('I', 2), 'S')": swin([['inline'] * 2, ['inline'] * 2, ['inline'] * 2 + ['swin_window'] * 2,
                                                 ['swin_window'] * 2]),
    "attention=('castling', 'castling', 'castling', 'swin_window')":
        swin([['castling'] * 2, ['castling'] * 2, ['castling'] * 4, ['swin_window'] * 2]),
    "attention=('sra', 'sra', 'inline', 'inline')": pvt_mixed,
}


def test_every_documented_example_is_tested():
    assert documented_examples() == set(EXAMPLES)


@pytest.mark.parametrize('example', sorted(EXAMPLES))
def test_documented_example_runs_as_written(example):
    kwargs = eval(f'dict({example})')  # the example's text, exactly as documented
    models = EXAMPLES[example](kwargs)
    x = torch.randn(1, 3, 64, 96)
    for model in models[:1]:  # one forward each (building checked the rest)
        out = model(x)
        assert all(torch.isfinite(o).all() for o in (out if isinstance(out, tuple) else (out, )))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_one_grammar_for_options_and_their_errors(family):
    build = FAMILIES[family]
    # Per-stage names and per-stage / per-block options, in every family.
    n = 3 if family == 'levit' else 4
    model = build(attention=('castling', ) + ('inline', ) * (n - 1), attn_cfgs=[dict(aux_softmax=True)] + [{}] * (n - 1))
    assert [m.aux_softmax for m in castlings(model)] == [True] * len(castlings(model)) and castlings(model)
    with pytest.raises(ValueError, match=r"unknown options \['aux_sofmax'\] for 'castling'"):
        build(attention='castling', attn_cfgs=dict(aux_sofmax=True))
    with pytest.raises(ValueError, match=r"attn_cfgs has an entry for 'castling', which no block uses"):
        build(attention='inline', attn_cfgs=dict(castling=dict(aux_softmax=True)))
    with pytest.raises(ValueError, match=rf'attn_cfgs needs one entry per (stage|block) \({n}\)'):
        build(attention='inline', attn_cfgs=[{}] * (n + 1))
