"""Castling-ViT's auxiliary masked softmax branch in training: the schedule hook, the L1 penalty on
the masked weights, the switch to linear-only inference, and a real tools/train.py run."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mmvitattn.attention import build_attention
from mmvitattn.backbones import CastlingPVT, CastlingViT
from mmvitattn.engine import CastlingAuxScheduleHook, set_castling_aux
from mmvitattn.engine.castling import stage_name
from mmvitattn.registry import HOOKS

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / 'configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'
AUX_STAGES = [dict(), dict(), dict(aux_softmax=True), dict(aux_softmax=True)]


def tiny_pvt(attn_cfgs=AUX_STAGES, **kw):
    torch.manual_seed(0)
    return CastlingPVT(arch=None, depths=(1, 1, 2, 1), embed_dims=(16, 32, 64, 64), num_heads=(1, 2, 2, 4),
                       mlp_ratios=(2, 2, 2, 2), attn_cfgs=attn_cfgs, **kw)


def fake_runner(model, iteration=0, max_iters=100):
    return SimpleNamespace(model=model, iter=iteration, max_iters=max_iters,
                           message_hub=MessageHub(f'castling-test-{id(model)}-{iteration}'))


def aux_modules(model):
    return list(CastlingAuxScheduleHook.find_modules(model).values())


# --- the schedule ---------------------------------------------------------------------------

def test_linear_schedule_with_iteration_boundaries():
    hook = CastlingAuxScheduleHook(begin=10, end=20, schedule='linear', start_coef=2.0)
    expected = {0: 2.0, 10: 2.0, 12: 1.6, 15: 1.0, 19: 0.2, 20: 0.0, 500: 0.0}
    for it, coef in expected.items():
        assert hook.coef_at(it) == pytest.approx(coef, abs=1e-12), it
    assert hook.coef_at(20) == 0.0 and hook.coef_at(21) == 0.0  # exactly 0 from ``end`` on


def test_cosine_schedule_with_fraction_boundaries():
    hook = CastlingAuxScheduleHook(begin=0.25, end=0.75, schedule='cosine', start_coef=1.0)
    assert hook.span(200) == (50.0, 150.0)
    assert hook.coef_at(0, 200) == 1.0 and hook.coef_at(50, 200) == 1.0
    assert hook.coef_at(100, 200) == pytest.approx(0.5)
    assert hook.coef_at(75, 200) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert hook.coef_at(149, 200) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert hook.coef_at(150, 200) == 0.0 and hook.coef_at(199, 200) == 0.0
    values = [hook.coef_at(it, 200) for it in range(200)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone
    # Fractions are of the run's length, not rounded: 0.5 of 7 iterations is 3.5.
    half = CastlingAuxScheduleHook(begin=0, end=0.5, schedule='linear')
    assert half.coef_at(3, 7) == pytest.approx(1 - 3 / 3.5) and half.coef_at(4, 7) == 0.0
    with pytest.raises(ValueError, match='end=0.5 is a fraction'):
        half.coef_at(3)


def test_mixed_boundaries_and_a_step_schedule():
    hook = CastlingAuxScheduleHook(begin=10, end=0.5, schedule='linear')
    assert hook.span(100) == (10.0, 50.0)
    assert hook.coef_at(30, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r'begin=10 \(iteration 10\) lies after end=0.5 \(iteration 5\)'):
        hook.span(10)
    step = CastlingAuxScheduleHook(begin=5, end=5, schedule='cosine', start_coef=0.3)
    assert [step.coef_at(i) for i in (0, 4, 5, 6)] == [0.3, 0.3, 0.0, 0.0]


def test_threshold_schedule_rises_linearly_over_the_same_span():
    hook = CastlingAuxScheduleHook(begin=0.1, end=0.5, schedule='cosine', threshold=(0.02, 0.05))
    taus = {0: 0.02, 10: 0.02, 20: 0.0275, 30: 0.035, 50: 0.05, 99: 0.05}
    for it, tau in taus.items():
        assert hook.threshold_at(it, 100) == pytest.approx(tau), it
    assert CastlingAuxScheduleHook(threshold=0.03).threshold_at(7, 10) == 0.03
    assert CastlingAuxScheduleHook().threshold_at(7, 10) is None


@pytest.mark.parametrize('kwargs, message', [
    (dict(begin=-1), 'begin must be an iteration >= 0, got -1'),
    (dict(end=1.5), r'end as a float .* \[0, 1\], got 1.5'),
    (dict(begin=True), 'begin must be an int iteration .* got True'),
    (dict(end='half'), "got 'half'"),
    (dict(begin=20, end=10), 'begin=20 lies after end=10'),
    (dict(schedule='exp'), "unknown schedule 'exp'"),
    (dict(start_coef=-1.0), 'start_coef must be a finite number >= 0, got -1.0'),
    (dict(start_coef=float('nan')), 'start_coef .* got nan'),
    (dict(threshold=(0.02, )), r'threshold .* got \(0.02,\)'),
    (dict(threshold=(0.02, -0.1)), r'finite number >= 0 .* got \(0.02, -0.1\)'),
    (dict(l1_weight=-0.1), 'l1_weight must be a finite number >= 0, got -0.1'),
])
def test_invalid_arguments_fail_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CastlingAuxScheduleHook(**kwargs)


def test_registered_under_the_package_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    from mmdet.registry import HOOKS as MMDET_HOOKS
    hook = MMDET_HOOKS.build(dict(type='mmvitattn.CastlingAuxScheduleHook', begin=0, end=0.5, schedule='cosine',
                                  start_coef=1.0, threshold=(0.02, 0.05), l1_weight=0.0))
    assert isinstance(hook, CastlingAuxScheduleHook)
    assert HOOKS.get('CastlingAuxScheduleHook') is CastlingAuxScheduleHook


# --- the hook on a model ----------------------------------------------------------------------

def test_stage_names():
    assert stage_name('backbone.block3.0.attn') == 'block3'
    assert stage_name('backbone.blocks.11.attn') == 'blocks'
    assert stage_name('backbone.layers.2.blocks.0.attn') == 'layers.2'


@pytest.mark.parametrize('model', [tiny_pvt(attn_cfgs=None), torch.nn.Linear(4, 4)])
def test_model_without_the_branch_fails_early(model):
    with pytest.raises(ValueError, match='no CastlingAttention with aux_softmax=True'):
        CastlingAuxScheduleHook().before_train(fake_runner(model))


def test_hook_drives_every_branch_and_logs_per_stage():
    model = torch.nn.DataParallel(tiny_pvt())  # a model wrapper is looked through
    modules = CastlingAuxScheduleHook.find_modules(model)
    assert list(modules) == ['block3.0.attn', 'block3.1.attn', 'block4.0.attn']
    hook = CastlingAuxScheduleHook(begin=0, end=0.5, schedule='linear', start_coef=1.0,
                                   threshold=(0.02, 0.05), l1_weight=0.01)
    runner = fake_runner(model, iteration=0, max_iters=10)
    hook.before_train(runner)
    x = torch.randn(2, 3, 64, 96)
    model.train()
    for it in range(7):
        runner.iter = it
        hook.before_train_iter(runner, it)
        assert all(m.aux_coef == hook.coef_at(it, 10) for m in modules.values())
        assert all(m.aux_threshold == pytest.approx(hook.threshold_at(it, 10)) for m in modules.values())
        assert all(m.aux_l1_weight == 0.01 for m in modules.values())
        model(x)[-1].sum().backward()
        hook.after_train_iter(runner, it)
        hub = runner.message_hub
        assert hub.get_scalar('train/castling_coef').current() == hook.coef_at(it, 10)
        density3 = hub.get_scalar('train/castling_density_block3').current()
        density4 = hub.get_scalar('train/castling_density_block4').current()
        if it < 5:
            expected3 = (modules['block3.0.attn'].last_mask_density + modules['block3.1.attn'].last_mask_density) / 2
            assert density3 == pytest.approx(expected3)
            assert density4 == modules['block4.0.attn'].last_mask_density
            assert isinstance(density4, float) and 0 < density4 <= 1
            assert hub.get_scalar('train/castling_l1').current() > 0
        else:  # coefficient 0: the branch did not run
            assert density3 == density4 == 0.0
            assert hub.get_scalar('train/castling_l1').current() == 0.0
    assert [hook.coef_at(i, 10) for i in range(7)] == pytest.approx([1, 0.8, 0.6, 0.4, 0.2, 0, 0])


def test_stateless_resume_gives_the_configured_coefficient():
    """A fresh hook on a fresh model whose run resumes at iteration k sets what the uninterrupted
    run set at k (nothing but the iteration and the run length enter the schedule)."""
    through = CastlingAuxScheduleHook(begin=0.1, end=0.6, schedule='cosine', threshold=(0.02, 0.05))
    model = tiny_pvt()
    runner = fake_runner(model, max_iters=50)
    through.before_train(runner)
    seen = {}
    for it in range(50):
        runner.iter = it
        through.before_train_iter(runner, it)
        seen[it] = (aux_modules(model)[0].aux_coef, aux_modules(model)[0].aux_threshold)
    for k in (3, 17, 29, 40):
        resumed_model = tiny_pvt()
        resumed = CastlingAuxScheduleHook(begin=0.1, end=0.6, schedule='cosine', threshold=(0.02, 0.05))
        resumed_runner = fake_runner(resumed_model, iteration=k, max_iters=50)
        resumed.before_train(resumed_runner)
        resumed.before_train_iter(resumed_runner, k)
        assert all((m.aux_coef, m.aux_threshold) == seen[k] for m in aux_modules(resumed_model))


# --- the switch to linear-only inference --------------------------------------------------------

def tiny_vit(attn_cfgs):
    torch.manual_seed(0)
    return CastlingViT(arch=None, embed_dim=64, depth=2, num_heads=2, patch_size=16, pretrain_img_size=64,
                       attn_cfgs=attn_cfgs)


@pytest.mark.parametrize('build', [lambda cfg: tiny_pvt(attn_cfgs=AUX_STAGES if cfg else None),
                                   lambda cfg: tiny_vit(dict(aux_softmax=True) if cfg else None)],
                         ids=['pvt', 'vit'])
def test_coefficient_zero_trains_the_inference_model(build):
    model = build(True)
    hook = CastlingAuxScheduleHook(begin=0, end=4)
    runner = fake_runner(model, iteration=4)
    hook.before_train(runner)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        model.train()
        hook.before_train_iter(runner, 4)  # past ``end``: coefficient 0
        train_out = model(x)
        model.eval()
        eval_out = model(x)
        runner.iter = 1
        hook.before_train_iter(runner, 1)
        model.train()
        on_out = model(x)
    for a, b in zip(train_out, eval_out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(on_out[-1], eval_out[-1])

    # The branch has no parameters: what was trained with it loads unchanged into the model without.
    plain = build(False)
    assert not CastlingAuxScheduleHook.find_modules(plain)
    trained = {k: v + 0.01 for k, v in model.state_dict().items()}
    assert trained.keys() == plain.state_dict().keys()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(trained, strict=True)
    model.load_state_dict(trained, strict=True)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), model.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- the L1 penalty on the masked weights -------------------------------------------------------

def test_l1_penalty_adds_exactly_the_gradient_of_weighted_l1_of_s():
    C, HEADS, H, W = 32, 2, 4, 5
    torch.manual_seed(0)
    mixer = build_attention('castling', C, HEADS, aux_softmax=True, aux_threshold=1.2, aux_chunk=7).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    mixer.train()
    mixer.aux_coef = 0.7
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, H * W, C, generator=g, dtype=torch.float64)
    pad = torch.zeros(2, H * W, dtype=torch.bool)
    pad[1].view(H, W)[:, 3:] = True  # image 1 is real in its left 4 x 3 part only
    r = torch.randn(2, H * W, C, generator=g, dtype=torch.float64)
    weight = 0.05

    def grads(l1_weight):
        mixer.zero_grad()
        mixer.aux_l1_weight = l1_weight
        (mixer(x, (H, W), pad) * r).sum().backward()
        return {n: p.grad.clone() for n, p in mixer.named_parameters()}

    plain, penalised = grads(0.0), grads(weight)
    penalty_value = mixer.last_aux_l1

    # weight * sum over real query rows of ||S_i||_1 / (heads x real tokens), S from the weights.
    mixer.zero_grad()
    q, k, v = mixer.project_qkv(x)
    logits = (q @ k.transpose(-2, -1) * mixer.scale).masked_fill(pad[:, None, None, :], float('-inf'))
    attn = logits.softmax(dim=-1)
    cut = 1.2 / (~pad).sum(-1).double()[:, None, None, None]  # relative: 1.2 / real keys of each image
    s = attn * (attn > cut)
    real_rows = (~pad)[:, None, :, None]
    penalty = weight * (s.abs() * real_rows).sum() / (HEADS * (~pad).sum())
    penalty.backward()
    assert penalty_value == pytest.approx(penalty.item(), rel=1e-12)
    assert 0 < penalty.item() < weight
    for name, p in mixer.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(penalised[name] - plain[name], expected, rtol=1e-9, atol=1e-12)
    # S depends on the query and key projections only: those feel the penalty, nothing else does.
    diff = penalised['qkv.weight'] - plain['qkv.weight']
    assert diff[:2 * C].abs().max() > 1e-6 and diff[2 * C:].abs().max() == 0
    assert torch.equal(penalised['proj.weight'], plain['proj.weight'])


# --- no N x N tensor unless the branch is on, and then only chunk x N ----------------------------

class LargestTensor(TorchDispatchMode):
    """Records the largest numel of any tensor an op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_n_by_n_tensor_without_the_branch_and_chunked_with_it():
    C, HEADS, CHUNK, B = 64, 2, 256, 1
    hw = (64, 64)
    n = hw[0] * hw[1]  # 4096 tokens: N x N = 16.8M, everything linear < N * C * 8 = 2.1M
    torch.manual_seed(0)
    mixer = build_attention('castling', C, HEADS, aux_softmax=True, aux_chunk=CHUNK)
    x = torch.randn(B, n, C, requires_grad=True)

    def largest(train, coef, l1_weight=0.0, backward=False):
        mixer.train(train)
        mixer.aux_coef, mixer.aux_l1_weight = coef, l1_weight
        with LargestTensor() as probe:
            out = mixer(x, hw)
            if backward:
                out.sum().backward()
        return probe.largest

    linear_bound = n * C * 8
    off_eval = largest(train=False, coef=1.0, backward=True)
    off_zero = largest(train=True, coef=0.0, backward=True)
    assert off_eval < linear_bound and off_zero < linear_bound
    on = largest(train=True, coef=1.0, l1_weight=0.01, backward=True)
    assert mixer.last_mask_density is not None
    print(f'largest tensor: eval {off_eval}, coef 0 {off_zero}, coef 1 {on}; N*N = {n * n}')
    assert on <= CHUNK * n * HEADS * B  # the largest tensors are one chunk of weights
    assert on < n * n


# --- a real run through tools/train.py ----------------------------------------------------------

CASTLING_DEMO = """_base_ = {base!r}
# The demo detector with Castling attention, the auxiliary branch on in stages 3 and 4.
model = dict(backbone=dict(type='mmvitattn.CastlingPVT',
                           attn_cfgs=[dict(), dict(), dict(aux_softmax=True), dict(aux_softmax=True)]))
custom_hooks = [dict(type='mmvitattn.CastlingAuxScheduleHook', begin=0, end=1.0, schedule='cosine',
                     start_coef=1.0, threshold=(0.02, 0.05), l1_weight=0.01)]
"""


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from mmvitattn.datasets.demo_data import make_coco_demo
    root = tmp_path_factory.mktemp('coco')
    make_coco_demo(str(root), num_train=8, num_val=4)
    return root


def train(*args):
    result = subprocess.run([sys.executable, 'tools/train.py', *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def train_logs(work_dir):
    """The training entries of the run's json log (vis_data/scalars.json), by 1-based iteration."""
    (path, ) = Path(work_dir).glob('*/vis_data/scalars.json')
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {e['iter']: e for e in entries if 'castling_coef' in e}


def test_train_resume_mid_schedule_and_load_into_the_inference_model(coco_root, tmp_path):
    config = tmp_path / 'castling_demo.py'
    config.write_text(CASTLING_DEMO.format(base=str(DEMO_CONFIG)))
    ann = f'{coco_root}/annotations/instances_val2017.json'
    options = ['--cfg-options', *[f'{s}_dataloader.dataset.data_root={coco_root}/' for s in ('train', 'val', 'test')],
               f'val_evaluator.ann_file={ann}', 'train_dataloader.batch_size=2', 'train_cfg.max_iters=4',
               'train_cfg.val_interval=100', 'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2',
               'default_hooks.checkpoint.max_keep_ckpts=3']
    schedule = CastlingAuxScheduleHook(begin=0, end=1.0, schedule='cosine')

    work = tmp_path / 'work'
    train(config, '--work-dir', work, *options)
    logs = train_logs(work)
    assert sorted(logs) == [1, 2, 3, 4]
    coefs = [logs[i]['castling_coef'] for i in range(1, 5)]
    assert coefs == pytest.approx([schedule.coef_at(i, 4) for i in range(4)])  # log iter n = runner.iter n - 1
    assert all(a > b for a, b in zip(coefs, coefs[1:])) and coefs[0] == 1.0
    assert logs[4]['castling_threshold'] == pytest.approx(0.02 + 0.03 * 3 / 4)
    assert all(0 <= logs[i][f'castling_density_{s}'] <= 1 for i in logs for s in ('block3', 'block4'))
    assert all('castling_l1' in logs[i] for i in logs)

    # Resume from iteration 2 in a fresh work dir: iteration 3 gets the configured coefficient.
    resumed_work = tmp_path / 'resumed'
    log = train(config, '--resume', work / 'iter_2.pth', '--work-dir', resumed_work, *options)
    assert 'resumed epoch: 0, iter: 2' in log
    resumed = train_logs(resumed_work)
    assert sorted(resumed) == [3, 4]
    assert resumed[3]['castling_coef'] == pytest.approx(schedule.coef_at(2, 4)) == pytest.approx(0.5)
    assert [resumed[i]['castling_coef'] for i in (3, 4)] == pytest.approx(coefs[2:])
    assert 'castling_coef: 0.5000' in log  # the text log too

    # The trained checkpoint loads unchanged into the linear-only inference model.
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(DEMO_CONFIG))
    cfg.model.backbone.type = 'mmvitattn.CastlingPVT'
    model = MODELS.build(cfg.model).eval()
    assert not CastlingAuxScheduleHook.find_modules(model)
    checkpoint = load_checkpoint(model, str(resumed_work / 'iter_4.pth'), map_location='cpu', strict=True)
    assert checkpoint['state_dict'].keys() == model.state_dict().keys()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 160))
    assert all(torch.isfinite(f).all() for f in feats)


# --- the mask density falls as configured on a short training run --------------------------------

def density_model():
    """A tiny Castling-PVT regressor with the branch in stages 2-4 (64 x 64 input: 64, 16 and 4
    tokens). q and k get weights large enough that attention is far from uniform at the start, as
    in a trained model; at the default initialisation almost no weight exceeds 1.5 / N."""
    torch.manual_seed(0)
    model = CastlingPVT(arch=None, depths=(1, 1, 1, 1), embed_dims=(8, 16, 32, 32), num_heads=(1, 2, 2, 2),
                        mlp_ratios=(2, 2, 2, 2), num_classes=3,
                        attn_cfgs=[dict(), dict(aux_softmax=True), dict(aux_softmax=True), dict(aux_softmax=True)])
    with torch.no_grad():
        for m in aux_modules(model):
            m.q.weight.normal_(0, 0.3)
            m.kv.weight.normal_(0, 0.3)
    return model.train()


def regression_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, generator=g)


def train_step(model, optimizer, x, y):
    loss = ((model.forward_classifier(x) - y) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_density_falls_with_the_scheduled_relative_threshold():
    """The hook raises tau from 1 to 6 (units of 1/N_real) over 24 of 25 iterations: in every stage
    the density stays below 1/tau at every step and falls with it."""
    model = density_model()
    x, y = regression_data()
    hook = CastlingAuxScheduleHook(begin=0, end=24, schedule='linear', threshold=(1.0, 6.0))
    runner = fake_runner(model, max_iters=25)
    hook.before_train(runner)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stages = ('block2', 'block3', 'block4')
    densities = {s: [] for s in stages}
    for it in range(24):  # the branch runs while the coefficient is > 0
        runner.iter = it
        hook.before_train_iter(runner, it)
        train_step(model, optimizer, x, y)
        hook.after_train_iter(runner, it)
        tau = 1.0 + 5.0 * it / 24
        assert runner.message_hub.get_scalar('train/castling_threshold').current() == pytest.approx(tau)
        for s in stages:
            density = runner.message_hub.get_scalar(f'train/castling_density_{s}').current()
            assert density < 1 / tau, (s, it, density, tau)  # a row holds < N_real / tau weights above tau / N_real
            densities[s].append(density)
    for s in stages:
        d = densities[s]
        assert d[0] > 0.1, (s, d)  # the mask starts well populated ...
        # ... and thins out step by step (the training step itself may flip a mask entry or two of
        # the 1024 in block3: a tolerance of 2e-3)
        assert all(a >= b - 2e-3 for a, b in zip(d, d[1:])), (s, d)
        assert d[-1] < 0.5 * d[0], (s, d)
    mean_first = sum(densities[s][0] for s in stages) / 3
    mean_last = sum(densities[s][-1] for s in stages) / 3
    assert mean_first > 0.15 and mean_last < 1 / 6 * 0.5, (mean_first, mean_last)


def test_l1_penalty_drives_the_density_to_zero():
    """At a fixed relative tau of 2, the L1 penalty flattens the rows under the cut: the density of
    every stage falls to (near) 0 within 40 steps; the same run without the penalty keeps its mask."""
    x, y = regression_data()
    runs = {}
    for l1_weight in (0.0, 1.0):
        model = density_model()
        set_castling_aux(model, 1.0, threshold=2.0, l1_weight=l1_weight)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        history = []
        for _ in range(40):
            train_step(model, optimizer, x, y)
            history.append([m.last_mask_density for m in aux_modules(model)])
        runs[l1_weight] = history
    plain, penalised = runs[0.0], runs[1.0]
    assert plain[0] == penalised[0]  # same start: the penalty acts through the gradient only
    mean = lambda row: sum(row) / len(row)  # noqa: E731
    assert mean(penalised[0]) > 0.1
    assert mean(penalised[-1]) < 0.1 * mean(penalised[0]), penalised[-1]
    assert all(last < 0.25 * first for first, last in zip(penalised[0], penalised[-1])), penalised[-1]
    assert mean(plain[-1]) > 5 * mean(penalised[-1]) and mean(plain[-1]) > 0.05, (plain[-1], penalised[-1])


def test_hook_rejects_a_threshold_that_does_not_suit_an_absolute_module():
    model = tiny_pvt(attn_cfgs=[dict(), dict(), dict(aux_softmax=True, aux_threshold_mode='absolute',
                                                     aux_threshold=0.02), dict()])
    hook = CastlingAuxScheduleHook(threshold=(0.5, 2.0))
    with pytest.raises(ValueError, match=r"threshold=\(0.5, 2.0\) for block3.0.attn: aux_threshold 2.0 with "
                       r"aux_threshold_mode='absolute' masks out every weight"):
        hook.before_train(fake_runner(model))
    with pytest.raises(ValueError, match="aux_threshold 1.5 with aux_threshold_mode='absolute'"):
        set_castling_aux(model, 1.0, threshold=1.5)
    assert aux_modules(model)[0].aux_threshold == 0.02  # nothing was changed
    assert set_castling_aux(model, 0.5, threshold=0.04) == 2  # block3 holds two blocks
    assert [m.aux_threshold for m in aux_modules(model)] == [0.04, 0.04]
