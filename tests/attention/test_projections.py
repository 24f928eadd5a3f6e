"""The projections are chosen apart from the mixing: LeViT's BN-linear projections (``'bn_qkv'``)
give every mixer the q, k, v of the affine map they compute, mixed exactly as plain linears'."""
import pytest
import torch
from torch import nn

from mmvitattn.attention import ATTENTIONS, QKVMixer, build_attention
from mmvitattn.attention.projections import BNLinear

DIM, HEADS, HW = 16, 2, (5, 7)
MIXERS = sorted(n for n in ATTENTIONS if issubclass(ATTENTIONS[n], QKVMixer) or n == 'armour')


def folded(layer: BNLinear, x: torch.Tensor, batch_stats: bool):
    """Weight and bias of the plain linear the BN-linear ``layer`` is on x (the BatchNorm formula)."""
    z = x.flatten(0, -2) @ layer.linear.weight.T
    bn = layer.bn
    mean, var = (z.mean(0), z.var(0, unbiased=False)) if batch_stats else (bn.running_mean, bn.running_var)
    scale = bn.weight / torch.sqrt(var + bn.eps)
    return layer.linear.weight * scale[:, None], bn.bias - mean * scale


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('name', MIXERS)
def test_bn_linear_projections_feed_the_same_mixing(name, training):
    torch.manual_seed(0)
    bn_mixer = build_attention(name, DIM, HEADS, qkv_layout='bn_qkv')
    with torch.no_grad():  # BatchNorms away from their identity start
        for m in bn_mixer.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    plain = build_attention(name, DIM, HEADS, qkv_layout='qkv')
    x = torch.randn(2, HW[0] * HW[1], DIM)
    pad = None
    if not training:  # padding with batch statistics is not padding-invariant (as in any BN model)
        pad = torch.zeros(2, HW[0] * HW[1], dtype=torch.bool)
        pad[1].view(HW)[3:] = True
        pad[1].view(HW)[:, 5:] = True
    layer_name = 'kv' if name == 'armour' else 'qkv'
    weight, bias = folded(getattr(bn_mixer, layer_name), x, training)
    state = {k: v for k, v in bn_mixer.state_dict().items() if not k.startswith((f'{layer_name}.', 'proj.'))}
    state[f'{layer_name}.weight'], state[f'{layer_name}.bias'] = weight.detach(), bias.detach()
    plain.proj = nn.Identity()
    plain.load_state_dict(state)
    bn_mixer.train(training), plain.train(training)
    assert isinstance(bn_mixer.proj.act, nn.Hardswish) and isinstance(bn_mixer.proj.ln, BNLinear)
    with torch.no_grad():
        expected = bn_mixer.proj(plain(x, HW, pad))
        out = bn_mixer(x, HW, pad)
    real = slice(None) if pad is None else ~pad  # a padded token's output is the mixer's own choice
    torch.testing.assert_close(out[real], expected[real], rtol=0, atol=1e-5)


def test_unknown_qkv_layout_is_named():
    with pytest.raises(ValueError, match=r"unknown qkv_layout 'bn'.*'bn_qkv'"):
        build_attention('inline', DIM, HEADS, qkv_layout='bn')


def test_bn_linear_slices_and_batch_affine_train_as_batchnorm_does():
    """Row slices (q, kv of SRA) and the per-batch affine map (windows) give nn.BatchNorm1d's output
    and running statistics on the same tokens."""
    import torch.nn.functional as F
    from mmvitattn.attention.projections import batch_affine, project_rows
    torch.manual_seed(0)
    layer = BNLinear(8, 24).train()
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5), layer.bn.bias.normal_()
    x = torch.randn(2, 5, 8)
    expected = layer(x)
    stats = (layer.bn.running_mean.clone(), layer.bn.running_var.clone())
    for run in (lambda: torch.cat([project_rows(layer, x, 0, 8), project_rows(layer, x, 8, 24)], dim=-1),
                lambda: F.linear(x, *batch_affine(layer, x))):
        layer.bn.reset_running_stats()
        torch.testing.assert_close(run(), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close((layer.bn.running_mean, layer.bn.running_var), stats, rtol=0, atol=1e-6)
        assert int(layer.bn.num_batches_tracked) == 1
