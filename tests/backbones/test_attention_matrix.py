"""Every registered token mixer in every stage of every family: it builds, runs forward and
backward, and on a non-square padded batch of two images the smaller image's features equal
those it gets alone."""
import pytest
import torch

from mmvitattn.attention import ATTENTIONS, QKVMixer, build_attention
from mmvitattn.backbones import ViT

from small_families import FAMILIES

TOL = 1e-5
BIG, SMALL = (64, 96), (40, 56)  # neither a multiple of the strides; the small one is padded


def padded_pair(generator):
    big = torch.randn(3, *BIG, generator=generator)
    small = torch.randn(3, *SMALL, generator=generator)
    batch = torch.zeros(2, 3, *BIG)
    batch[0], batch[1, :, :SMALL[0], :SMALL[1]] = big, small
    pad_mask = torch.ones(2, *BIG, dtype=torch.bool)
    pad_mask[0] = False
    pad_mask[1, :SMALL[0], :SMALL[1]] = False
    return batch, pad_mask, small[None]


@pytest.mark.parametrize('attention', sorted(ATTENTIONS))
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_mixer_in_every_family(family, attention):
    torch.manual_seed(0)
    model = FAMILIES[family](attention=attention)
    batch, pad_mask, small = padded_pair(torch.Generator().manual_seed(1))

    model.train()
    sum(o.square().mean() for o in model(batch, pad_mask)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        together = model(batch, pad_mask)
        alone = model(small)
    assert len(together) == len(alone)
    for level, (t, a) in enumerate(zip(together, alone)):
        h, w = a.shape[-2:]
        assert (torch.tensor(t.shape[-2:]) >= torch.tensor((h, w))).all()
        diff = (t[1:, :, :h, :w] - a).abs().max().item()
        assert diff <= TOL, f'{family} x {attention}, level {level}: {diff:.2e}'


@pytest.mark.parametrize('attention', ['inline', 'castling', 'cswin'])
def test_levit_stages_give_any_mixer_its_bn_linear_projections(attention):
    """In LeViT a registered mixer runs on LeViT's projections: a BN-linear qkv with key_dim
    channels per head, Hardswish then a BN-linear proj (LeViT's own forms keep their layout)."""
    from torch import nn
    from mmvitattn.attention.projections import BNLinear
    model = FAMILIES['levit'](attention=attention)
    attn = model.stages[1].blocks[0].attn
    assert type(attn) is ATTENTIONS[attention] and attn.head_dim == model.key_dim == 16
    assert isinstance(attn.qkv, BNLinear) and attn.qkv.linear.bias is None
    assert isinstance(attn.proj.act, nn.Hardswish) and isinstance(attn.proj.ln, BNLinear)
    plain = FAMILIES['levit'](attention=attention, attn_cfgs=dict(qkv_layout='qkv')).stages[1].blocks[0].attn
    assert isinstance(plain.qkv, nn.Linear) and isinstance(plain.proj, nn.Linear)


def test_window_attention_in_a_plain_vit_needs_no_cls_token():
    with pytest.raises(ValueError, match=r"'swin_window' attention works on windows of the token grid.*"
                                         r"with_cls_token=False"):
        ViT(arch=None, embed_dim=32, depth=2, num_heads=2, attention='swin_window')


@pytest.mark.parametrize('attention', sorted(n for n in ATTENTIONS if issubclass(ATTENTIONS[n], QKVMixer)
                                             and n != 'armour'))
def test_the_qkv_layout_only_names_parameters(attention):
    """A fused ``qkv`` linear and PVT's ``q`` + ``kv`` with the same rows give the same mixer."""
    torch.manual_seed(0)
    fused = build_attention(attention, 16, 2, qkv_layout='qkv').eval()
    split = build_attention(attention, 16, 2, qkv_layout='q_kv').eval()
    state = {k: v for k, v in fused.state_dict().items() if not k.startswith('qkv.')}
    for leaf in ('weight', 'bias'):
        rows = fused.state_dict()[f'qkv.{leaf}']
        state[f'q.{leaf}'], state[f'kv.{leaf}'] = rows[:16], rows[16:]
    split.load_state_dict(state)
    x = torch.randn(2, 5 * 7, 16)
    pad = torch.zeros(2, 5 * 7, dtype=torch.bool)
    pad[1].view(5, 7)[3:] = True
    pad[1].view(5, 7)[:, 4:] = True
    torch.testing.assert_close(split(x, (5, 7), pad), fused(x, (5, 7), pad), rtol=0, atol=1e-6)


FORMULAS = {  # attention -> (module, the one function that computes its math)
    'inline': ('mmvitattn.attention.inline', 'inline_kv'),
    'castling': ('mmvitattn.attention.castling', 'CastlingAttention'),
    'armour': ('mmvitattn.attention.armour', 'ArmourAttention'),
}


@pytest.mark.parametrize('attention', sorted(FORMULAS))
def test_each_formula_lives_in_one_function(attention, monkeypatch):
    """Every family runs ``attention`` through its one implementation (InLine-CSwin's branch too).
    LeViT's 'armour' is its own Armour-LeViT form (v = [q | v_own], a biased softmax), not this one."""
    import importlib
    module_name, name = FORMULAS[attention]
    module = importlib.import_module(module_name)
    calls = []
    if name[0].islower():
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    else:
        cls = getattr(module, name)
        original = cls.forward
        monkeypatch.setattr(cls, 'forward', lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    for family in sorted(FAMILIES):
        if family == 'levit' and attention == 'armour':
            continue
        model = FAMILIES[family](attention=attention).eval()
        calls.clear()
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 48))
        assert calls, f'{family} computes {attention!r} attention elsewhere'
