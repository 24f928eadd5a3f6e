"""tools/analysis/benchmark_model.py: whole-model inference / training measurements, JSON rows and
where a linear-attention config overtakes its softmax twin."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis' / 'benchmark_model.py'
INLINE = 'configs/mask_rcnn/mask-rcnn_inline-pvt-t_fpn_1x_coco.py'
SOFTMAX = 'configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py'


def load_tool():
    sys.path.insert(0, str(TOOL.parent))
    spec = importlib.util.spec_from_file_location('benchmark_model', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = ('mask-rcnn_inline-pvt-t_fpn_1x_coco', 'mask-rcnn_pvt-t_fpn_1x_coco')
ARGS = [str(ROOT / INLINE), str(ROOT / SOFTMAX), '--sizes', '64x96', '--mode', 'infer', 'train', '--repeats', '1',
        '--warmup', '0', '--threads', '1']


def check_rows(result, with_memory: bool):
    assert result['threads'] == 1 and result['device'] == 'cpu'
    rows = {(r['config'], r['mode']): r for r in result['rows']}
    assert set(rows) == {(n, m) for n in NAMES for m in ('infer', 'forward', 'train')}
    for row in rows.values():
        assert (row['height'], row['width']) == (64, 96) and 'error' not in row
        assert row['latency_ms'] > 0 and row['cpu_ms'] > 0 and row['repeats'] == 1
        if with_memory:
            assert row['peak_mem_mib'] > 0 and 0 < row['flops_backbone'] < row['flops']
    if with_memory:  # one count per config and size, shared by its measurements; the backbones differ
        assert rows[NAMES[0], 'infer']['flops'] == rows[NAMES[0], 'train']['flops']
        assert rows[NAMES[0], 'infer']['flops_backbone'] != rows[NAMES[1], 'infer']['flops_backbone']
    pairs = {(c['config'], c['twin'], c['mode']) for c in result['crossovers']}
    assert pairs == {(NAMES[0], NAMES[1], m) for m in ('infer', 'forward', 'train')}


def test_a_run_times_every_config_and_measurement(tmp_path, capsys):
    tool = load_tool()
    threads = torch.get_num_threads()
    try:
        tool.main(ARGS + ['--no-memory', '--out', str(tmp_path / 'bench.json')])
    finally:
        torch.set_num_threads(threads)
    check_rows(json.loads((tmp_path / 'bench.json').read_text()), with_memory=False)
    out = capsys.readouterr().out
    assert '[6/6]' in out and 'round 1:' in out  # progress per measurement


def test_peak_memory_and_flops_of_one_measurement():
    from mmvitattn.analysis import backbone_flops
    tool = load_tool()
    results = tool.measure_one(str(ROOT / INLINE), (64, 96), ['forward', 'train'], 'cpu', None, mem_limit_gib=0,
                               count=True)
    assert set(results) == {'forward', 'train'} and results['forward']['flops'] == results['train']['flops']
    result = results['train']
    assert result['peak_mem_mib'] > 0 and 'error' not in result
    bench = tool.Bench(str(ROOT / INLINE), 'cpu')
    assert result['flops_backbone'] == backbone_flops(bench.model.backbone, (64, 96)).total
    assert result['flops'] > result['flops_backbone']


@pytest.mark.skipif(os.environ.get('MMVITATTN_SLOW') != '1', reason='slow: set MMVITATTN_SLOW=1 to run')
def test_the_command_writes_a_row_per_config_size_and_measurement(tmp_path):
    """The README's command as a user runs it: memory and FLOPs in fresh processes (7 of them)."""
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, str(TOOL)] + ARGS + ['--out', str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_rows(json.loads(out.read_text()), with_memory=True)
    assert '[6/6]' in proc.stdout and 'round 1:' in proc.stdout


def test_the_training_step_uses_the_configs_loss_and_optimizer():
    tool = load_tool()
    bench = tool.Bench(str(ROOT / INLINE), 'cpu')
    bench.set_size((64, 96))
    optimizer = bench.optim_wrapper.optimizer
    assert type(optimizer) is torch.optim.AdamW  # the config's optim_wrapper
    assert {g['lr'] for g in optimizer.param_groups} == {1e-4}
    assert {g['weight_decay'] for g in optimizer.param_groups} == {1e-4, 0.0}  # no decay on norms etc.
    before = {n: p.detach().clone() for n, p in bench.model.named_parameters()}
    log_vars = bench.run('train')
    assert math.isfinite(float(log_vars['loss']))
    # Mask R-CNN's own losses, summed into the loss the step minimised.
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert key in log_vars, key
    parts = sum(float(v) for k, v in log_vars.items() if k.startswith('loss_'))
    assert float(log_vars['loss']) == pytest.approx(parts, rel=1e-5)
    changed = {n.split('.')[0] for n, p in bench.model.named_parameters() if not torch.equal(before[n], p)}
    assert {'backbone', 'neck', 'rpn_head', 'roi_head'} <= changed
    assert len(bench.data['data_samples'][0].gt_instances) == tool.NUM_GT


def test_crossover_is_interpolated_in_log_log():
    tool = load_tool()
    # Linear 2x slower at 1 MP, 2x faster at 4 MP: the log ratio is 0 halfway in log pixels, 2 MP.
    c = tool.crossover([(1e6, 2.0), (4e6, 4.0)], [(1e6, 1.0), (4e6, 8.0)])
    assert c['status'] == 'crosses' and c['pixels'] == pytest.approx(2e6)
    # A win at the middle size that is lost again does not count: the last loss decides.
    c = tool.crossover([(1, 1.0), (2, 3.0), (4, 1.0)], [(1, 2.0), (2, 2.0), (4, 4.0)])
    assert c['status'] == 'crosses' and 2 < c['pixels'] < 4
    assert tool.crossover([(1, 1.0), (4, 2.0)], [(1, 2.0), (4, 3.0)])['status'] == 'wins_from_smallest'
    never = tool.crossover([(1, 2.0), (4, 6.0)], [(1, 1.0), (4, 3.0)])
    assert never['status'] == 'never' and never['ratio_at_largest'] == pytest.approx(0.5)


def test_twins_are_found_by_name_or_given():
    tool = load_tool()
    names = ['mask-rcnn_inline-pvt-t_fpn_1x_coco', 'mask-rcnn_pvt-t_fpn_1x_coco', 'mask-rcnn_castling-deit-s_x',
             'mask-rcnn_deit-s-global_x']
    assert tool.softmax_twin(names[0], names, {}) == names[1]
    assert tool.softmax_twin(names[1], names, {}) is None
    assert tool.softmax_twin(names[2], names, {}) is None  # mask-rcnn_deit-s_x was not measured
    assert tool.softmax_twin(names[2], names, tool.parse_twins([f'{names[2]}.py=configs/{names[3]}.py'])) == names[3]


def test_bad_arguments_are_refused_early(capsys):
    tool = load_tool()
    config = str(ROOT / INLINE)
    for argv, message in (([config, '--sizes', '64x'], 'bad input size'),
                          ([config, '--twin', 'a-b'], 'bad --twin'),
                          (['configs/no_such.py'], 'file not found: configs/no_such.py'),
                          ([config, '--repeats', '0'], '--repeats')):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
        assert message in capsys.readouterr().err
