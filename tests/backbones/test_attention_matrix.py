"""Every registered token mixer in every stage of every family: it builds, runs forward and
backward, and on a non-square padded batch of two images the smaller image's features equal
those it gets alone."""
import pytest
import torch

from mmvitattn.attention import ATTENTIONS
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


def test_window_attention_in_a_plain_vit_needs_no_cls_token():
    with pytest.raises(ValueError, match=r"'swin_window' attention works on windows of the token grid.*"
                                         r"with_cls_token=False"):
        ViT(arch=None, embed_dim=32, depth=2, num_heads=2, attention='swin_window')
