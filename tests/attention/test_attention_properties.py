"""Property-based checks over random shapes, head counts and batch-padding masks, for every
registered token mixer: finite outputs; padded tokens have no influence on real outputs; each
image's real outputs equal the mixer run on that image alone (its own real map, no mask); and,
for the mechanisms with a closed form, that alone result equals an explicit N x N reference."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmvitattn.attention import ATTENTIONS, build_attention

TOL = 1e-9  # float64 throughout


def heads_split(t, heads):
    n, c = t.shape
    return t.reshape(n, heads, c // heads).transpose(0, 1)


def merged(t):
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def projections(mixer, x):
    if hasattr(mixer, 'qkv'):
        return F.linear(x, mixer.qkv.weight, mixer.qkv.bias).chunk(3, dim=-1)
    return (F.linear(x, mixer.q.weight, mixer.q.bias),
            *F.linear(x, mixer.kv.weight, mixer.kv.bias).chunk(2, dim=-1))


def softmax_ref(mixer, x, hw):
    q, k, v = (heads_split(t, mixer.num_heads) for t in projections(mixer, x))
    attn = torch.softmax(q @ k.transpose(-2, -1) * mixer.head_dim**-0.5, dim=-1)
    return F.linear(merged(attn @ v), mixer.proj.weight, mixer.proj.bias)


def armour_ref(mixer, x, hw):
    k, v = (heads_split(t, mixer.num_heads) for t in F.linear(x, mixer.kv.weight, mixer.kv.bias).chunk(2, -1))
    attn = torch.softmax(v @ k.transpose(-2, -1) * mixer.head_dim**-0.5, dim=-1)
    return F.linear(merged(attn @ v), mixer.proj.weight, mixer.proj.bias)


def inline_ref(mixer, x, hw):
    q, k, v = (heads_split(t, mixer.num_heads) for t in projections(mixer, x))
    n = x.shape[0]
    dots = q @ k.transpose(-2, -1) * mixer.head_dim**-0.5 / n
    weights = dots - dots.sum(-1, keepdim=True) / n + 1.0 / n
    y = merged(weights @ v)
    prefix = n - hw[0] * hw[1]
    c = x.shape[1]
    kernel = mixer.residual(x.mean(0)[None, :, None])[0].reshape(c, 3, 3)
    grid = merged(v)[prefix:].reshape(*hw, c)
    padded = F.pad(grid.permute(2, 0, 1), (1, 1, 1, 1))
    local = sum(kernel[:, i, j, None, None] * padded[:, i:i + hw[0], j:j + hw[1]]
                for i in range(3) for j in range(3))
    y[prefix:] += local.permute(1, 2, 0).reshape(-1, c)
    return F.linear(y, mixer.proj.weight, mixer.proj.bias)


def castling_ref(mixer, x, hw):
    q, k, v = (heads_split(t, mixer.num_heads) for t in projections(mixer, x))
    n = x.shape[0]
    qh, kh = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    const = torch.eye(n, dtype=x.dtype) if mixer.constant_term == 'self' else torch.ones(n, n, dtype=x.dtype)
    y = F.normalize((0.5 * const + qh @ kh.transpose(-2, -1) / math.pi) @ v, dim=-1)
    weight = mixer.dconv.weight[:, 0, :, 0]  # (heads, k): along the token axis, zero padded
    r = weight.shape[1] // 2
    conv = torch.zeros_like(v)
    for o in range(-r, r + 1):
        lo, hi = max(0, -o), min(n, n - o)
        if lo >= hi:
            continue
        conv[:, lo:hi] += weight[:, o + r, None, None] * v[:, lo + o:hi + o]
    return F.linear(merged(y + conv), mixer.proj.weight, mixer.proj.bias)


REFERENCES = {'softmax': softmax_ref, 'armour': armour_ref, 'inline': inline_ref, 'castling': castling_ref}
NO_PREFIX = {name for name, cls in ATTENTIONS.items() if not cls.takes_prefix_tokens}  # grid-only mixers


@st.composite
def cases(draw, name):
    heads = draw(st.integers(1, 3)) * (2 if name == 'cswin' else 1)  # stripes split the heads in halves
    dim = heads * draw(st.sampled_from([2, 4, 8]))
    kwargs = {}
    min_side = 1
    if name in ('sra', 'swin_window', 'cswin'):  # either q/k/v layout computes the same function
        kwargs['qkv_layout'] = draw(st.sampled_from(['qkv', 'q_kv']))
    if name == 'sra':
        kwargs['sr_ratio'] = min_side = draw(st.integers(1, 3))
    elif name == 'swin_window':
        kwargs.update(window_size=draw(st.integers(1, 4)), shift=draw(st.booleans()))
    elif name == 'cswin':
        kwargs['split_size'] = draw(st.sampled_from([None, 1, 2, 3]))
    elif name == 'castling':
        kwargs.update(kernel_size=draw(st.sampled_from([1, 3, 9])),
                      constant_term=draw(st.sampled_from(['self', 'sum'])))
    elif name in ('inline', 'softmax'):
        kwargs['qkv_layout'] = draw(st.sampled_from(['qkv', 'q_kv']))
    batch = draw(st.integers(1, 3))
    h, w = draw(st.integers(min_side, 7)), draw(st.integers(min_side, 7))
    sizes = [(draw(st.integers(min_side, h)), draw(st.integers(min_side, w))) for _ in range(batch)]
    prefix = 0 if name in NO_PREFIX else draw(st.integers(0, 1))
    seed = draw(st.integers(0, 2**16))
    return dict(heads=heads, dim=dim, kwargs=kwargs, hw=(h, w), sizes=sizes, prefix=prefix, seed=seed)


def build(name, case):
    torch.manual_seed(case['seed'])
    mixer = build_attention(name, case['dim'], case['heads'], **case['kwargs']).double().eval()
    with torch.no_grad():  # random weights everywhere: no term hides behind a zero init
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return mixer


def batch_of(case):
    g = torch.Generator().manual_seed(case['seed'])
    (h, w), prefix = case['hw'], case['prefix']
    x = torch.randn(len(case['sizes']), prefix + h * w, case['dim'], generator=g, dtype=torch.float64)
    pad = torch.zeros(x.shape[:2], dtype=torch.bool)
    for i, (vh, vw) in enumerate(case['sizes']):
        grid = torch.ones(h, w, dtype=torch.bool)
        grid[:vh, :vw] = False
        pad[i, prefix:] = grid.flatten()
    return x, pad


def crop(t, case, size):
    """Prefix tokens + the top-left ``size`` part of one image's (prefix + h*w, C) tokens."""
    prefix, (h, w) = case['prefix'], case['hw']
    grid = t[prefix:].reshape(h, w, -1)[:size[0], :size[1]].reshape(size[0] * size[1], -1)
    return torch.cat([t[:prefix], grid])


@pytest.mark.parametrize('name', sorted(ATTENTIONS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_padding_has_no_influence_and_matches_alone(name, data):
    case = data.draw(cases(name))
    mixer = build(name, case)
    x, pad = batch_of(case)
    with torch.no_grad():
        out = mixer(x, case['hw'], pad)
        assert torch.isfinite(out).all()
        # Any values on padded tokens: the real outputs do not move.
        noise = torch.randn_like(x) * 50
        out2 = mixer(torch.where(pad[..., None], noise, x), case['hw'], pad)
        real = ~pad
        assert (out - out2)[real].abs().max() <= TOL
        for i, size in enumerate(case['sizes']):
            alone_x = crop(x[i], case, size)
            alone = mixer(alone_x[None], size)[0]
            assert torch.isfinite(alone).all()
            assert (crop(out[i], case, size) - alone).abs().max() <= TOL, (i, size)
            if name in REFERENCES:
                ref = REFERENCES[name](mixer, alone_x, size)
                assert (alone - ref).abs().max() <= 1e-8, (i, size)


def test_every_registered_mixer_is_covered():
    assert {'inline', 'castling', 'armour', 'softmax', 'sra', 'swin_window'} <= set(ATTENTIONS)
