"""Backbone conventions every family shares: ``with_cp`` and stochastic depth."""
import pytest
import torch

from mmvitattn.backbones import InLineCSwin, InLinePVT, InLineSwin, InLineViT

# Small members of each family; the ViT's single map goes through the simple pyramid.
CHECKPOINTED = {
    'cswin': lambda **kw: InLineCSwin(arch='t', depths=(1, 1, 1, 1), **kw),
    'pvt': lambda **kw: InLinePVT(arch=None, depths=(1, 1, 1, 1), **kw),
    'swin': lambda **kw: InLineSwin(arch='t', depths=(1, 2, 1, 1), **kw),
    'vit': lambda **kw: InLineViT(arch='t', depth=2, out_type='simple_pyramid', **kw),
}
# (model, seeds of two training passes): the ViT has one stochastic block (the rate rises from 0),
# and seeds 0 and 3 drop it differently.
DROP_PATH = {
    'cswin': (lambda: InLineCSwin(arch='t', depths=(1, 1, 2, 1), drop_path_rate=0.5), (0, 1)),
    'pvt': (lambda: InLinePVT(arch=None, depths=(2, 2, 2, 2), drop_path_rate=0.5), (0, 1)),
    'swin': (lambda: InLineSwin(arch='t', depths=(2, 2, 2, 2), drop_path_rate=0.5), (0, 1)),
    'vit': (lambda: InLineViT(arch='t', depth=2, drop_path_rate=0.5), (0, 3)),
}


@pytest.mark.parametrize('family', sorted(CHECKPOINTED))
def test_with_cp_gives_the_same_gradients(family):
    torch.manual_seed(0)
    plain = CHECKPOINTED[family]()
    checkpointed = CHECKPOINTED[family](with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 96)
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize('family', sorted(DROP_PATH))
def test_drop_path_is_stochastic_in_training_only(family):
    build, seeds = DROP_PATH[family]
    model = build()
    x = torch.randn(1, 3, 64, 64)
    model.train()
    outs = []
    for seed in seeds:
        torch.manual_seed(seed)
        outs.append(model(x)[-1])
    assert not torch.allclose(*outs)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])
