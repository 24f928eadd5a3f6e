"""Checks a GPU machine end to end (run through ``bash tools/check_gpu.sh``).

1. Prints the GPU, the driver, torch / CUDA / cuDNN / torchvision / mmcv versions and which mmcv
   ops run on mmvitattn's CUDA implementations (``mmvitattn.ops``), and runs their CUDA tests
   (``tests/ops``: the ops on CUDA tensors against mmcv's CPU kernels).
2. Trains the demo configs (Mask R-CNN with InLine-PVT-nano and with Castling-PVT-nano and its
   auxiliary branch, UperNet with InLine-PVT-nano) for ``--iters`` iterations on the GPU, in float32
   and with ``--amp`` (float16 and bfloat16), with tools/train.py, and evaluates each checkpoint
   with tools/test.py. A run passes when it exits 0, its losses are finite and its test writes
   metrics.
3. Runs the resolution sweep (tools/analysis/benchmark_resolution.py) on the GPU: DeiT-S and PVT-T
   trunks, 224 to 2048, float32 and bfloat16, forward and forward + backward, CUDA events, the SDPA
   kernel that ran and the TF32 settings recorded.
4. Writes everything to ``<work-dir>/check_gpu.json`` and the tables to ``<work-dir>/check_gpu.md``
   and stdout. Exits non-zero when a training run, a test or a sweep failed.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from mmvitattn.utils.runtime import write_json, write_text  # noqa: E402

CONFIGS = {
    'mask-rcnn inline-pvt-nano': ('configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py', 'coco/bbox_mAP'),
    'mask-rcnn castling-pvt-nano aux': ('configs/demo/mask-rcnn_castling-pvt-nano-aux_fpn_coco-demo.py',
                                        'coco/bbox_mAP'),
    'upernet inline-pvt-nano': ('configs/demo/upernet_inline-pvt-nano_ade20k-demo.py', 'mIoU'),
}
PRECISIONS = {'fp32': [], 'amp-fp16': ['--amp'], 'amp-bf16': ['--amp', '--amp-dtype', 'bfloat16']}
SWEEPS = {
    'deit-s': ['none', 'proj', 'softmax', 'inline', 'castling', 'armour'],
    'pvt-t': ['none', 'proj', 'sra', 'inline', 'castling'],
}
SWEEP_DTYPES = ('float32', 'bfloat16')
SWEEP_MODES = ('infer', 'train')


def environment() -> dict:
    import torch
    import torchvision
    import mmcv
    import mmvitattn
    from mmvitattn import ops
    env = dict(python=sys.version.split()[0], torch=torch.__version__, torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version(), torchvision=torchvision.__version__, mmcv=mmcv.__version__,
               mmcv_cuda_ops=ops.mmcv_has_cuda_ops(), mmvitattn=mmvitattn.__version__,
               fallback_devices=sorted(ops.routed_devices()), fallback_ops=sorted(ops.FALLBACK_OPS),
               cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_count=torch.cuda.device_count(), capability=f'{props.major}.{props.minor}',
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    try:
        env['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                       capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env['driver'] = None
    return env


def run_logged(cmd, log_path, env=None, timeout=None) -> int:
    with open(log_path, 'w') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        try:
            return subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            log.write(f'\ntimed out after {timeout} s\n')
            return 124


def logged_losses(work_dir: str):
    """(iteration, loss) pairs from mmengine's scalars.json of a training run."""
    losses = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'loss' in record and 'iter' in record:
                    losses.append((record['iter'], record['loss']))
    return losses


def train_and_test(name: str, precision: str, args) -> dict:
    config, metric = CONFIGS[name]
    tag = f'{name.replace(" ", "_")}_{precision}'
    work_dir = osp.join(args.work_dir, 'train', tag)
    os.makedirs(work_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads_per_job))
    n = args.iters
    options = [f'train_cfg.max_iters={n}', f'train_cfg.val_interval={10 * n}',  # tools/test.py evaluates
               f'default_hooks.checkpoint.interval={n}', f'default_hooks.logger.interval={max(1, n // 4)}']
    result = dict(config=config, precision=precision, iters=n, metric=metric)
    start = time.time()
    rc = run_logged([sys.executable, 'tools/train.py', config, '--work-dir', work_dir, *PRECISIONS[precision],
                     '--cfg-options', *options], osp.join(work_dir, 'train.log'), env, args.job_timeout)
    result.update(train_s=round(time.time() - start, 1), train_rc=rc)
    losses = logged_losses(work_dir)
    result['losses'] = losses
    checkpoint = osp.join(work_dir, f'iter_{n}.pth')
    if rc == 0 and osp.isfile(checkpoint):
        metrics_file = osp.join(work_dir, 'test_metrics.json')
        start = time.time()
        result['test_rc'] = run_logged([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
                                        osp.join(work_dir, 'test'), '--metrics-out', metrics_file],
                                       osp.join(work_dir, 'test.log'), env, args.job_timeout)
        result['test_s'] = round(time.time() - start, 1)
        if osp.isfile(metrics_file):
            with open(metrics_file) as f:
                result['metrics'] = json.load(f)
    finite = bool(losses) and all(math.isfinite(loss) for _, loss in losses)
    result['ok'] = rc == 0 and finite and result.get('test_rc') == 0 and metric in result.get('metrics', {})
    result['log'] = osp.relpath(work_dir, REPO)
    loss = f'{losses[0][1]:.3f} -> {losses[-1][1]:.3f}' if losses else '-'
    print(f'  {name:32} {precision:9} {"ok" if result["ok"] else "FAILED"} (train {result["train_s"]} s, '
          f'loss {loss}, {metric} {result.get("metrics", {}).get(metric, "-")})', flush=True)
    return result


def op_tests(args) -> dict:
    """The fallback ops' tests, the CUDA ones included (they skip without a GPU)."""
    log = osp.join(args.work_dir, 'op_tests.log')
    rc = run_logged([sys.executable, '-m', 'pytest', 'tests/ops/test_fallback_ops.py', '-q', '-p', 'no:cacheprovider',
                     '-rs'], log, timeout=args.job_timeout)
    with open(log) as f:
        summary = [line.strip() for line in f if ' passed' in line or ' failed' in line][-1:]
    print(f'  fallback op tests: {"ok" if rc == 0 else "FAILED"} ({summary[0] if summary else "no summary"})',
          flush=True)
    return dict(ok=rc == 0, summary=summary[0] if summary else None, log=osp.relpath(log, REPO))


def run_sweep(trunk: str, dtype: str, mode: str, args) -> dict:
    out = osp.join(args.work_dir, 'sweep', f'{trunk}_{dtype}_{mode}.json')
    os.makedirs(osp.dirname(out), exist_ok=True)
    cmd = [sys.executable, 'tools/analysis/benchmark_resolution.py', '--trunk', trunk, '--device', args.device,
           '--dtype', dtype, '--mode', mode, '--attention', *SWEEPS[trunk], '--sizes', *args.sizes,
           '--warmup', '3', '--repeats', str(args.repeats), '--min-repeats', '3', '--time-budget', '20',
           '--no-flops', '--out', out]
    rc = run_logged(cmd, out[:-5] + '.log', timeout=args.job_timeout)
    if rc != 0 or not osp.isfile(out):
        print(f'  sweep {trunk} {dtype} {mode}: FAILED (see {out[:-5]}.log)', flush=True)
        return dict(trunk=trunk, dtype=dtype, mode=mode, error=f'exit code {rc}', log=out[:-5] + '.log')
    with open(out) as f:
        result = json.load(f)
    print(f'  sweep {trunk} {dtype} {mode}: {len(result["rows"])} rows', flush=True)
    return result


def training_table(runs) -> str:
    lines = ['| config | precision | iterations | train s | loss first -> last | test metric | status |',
             '|---|---|---|---|---|---|---|']
    for r in runs:
        losses = r.get('losses') or []
        loss = f'{losses[0][1]:.3f} -> {losses[-1][1]:.3f}' if losses else '-'
        value = r.get('metrics', {}).get(r['metric'])
        shown = f'{r["metric"]} {value:.3f}' if isinstance(value, (int, float)) else '-'
        lines.append(f'| `{osp.basename(r["config"])}` | {r["precision"]} | {r["iters"]} | {r["train_s"]} | {loss} '
                     f'| {shown} | {"ok" if r["ok"] else "FAILED"} |')
    return '\n'.join(lines)


def sweep_table(sweeps) -> str:
    """One table per trunk: rows (dtype, mode, size), cells 'median ms / peak MiB' per variant."""
    blocks = []
    for trunk, variants in SWEEPS.items():
        lines = [f'**{trunk}** trunk, batch 1, median ms / peak MiB (SDPA kernel of the softmax variants)', '',
                 '| dtype | pass | size | ' + ' | '.join(variants) + ' | SDPA |',
                 '|---|---|---|' + '---|' * (len(variants) + 1)]
        for result in sweeps:
            if result.get('trunk') != trunk or 'rows' not in result:
                continue
            by_size = {}
            for row in result['rows']:
                by_size.setdefault(f'{row["height"]}x{row["width"]}', {})[row['attention']] = row
            for size, rows in by_size.items():
                cells = []
                for v in variants:
                    row = rows.get(v)
                    mem = row.get('peak_mem_mib') if row else None
                    cells.append('-' if row is None else f'{row["latency_ms"]:.2f} / {mem:.0f}' if mem is not None
                                 else f'{row["latency_ms"]:.2f}')
                kernels = sorted({k for row in rows.values() for k in row.get('sdpa', [])})
                lines.append(f'| {result["dtype"]} | {result["mode"]} | {size} | ' + ' | '.join(cells)
                             + f' | {"+".join(kernels) or "-"} |')
        failed = [r for r in sweeps if r.get('trunk') == trunk and 'error' in r]
        lines += [f'| {r["dtype"]} | {r["mode"]} | FAILED: {r["error"]} |' for r in failed]
        blocks.append('\n'.join(lines))
    return '\n\n'.join(blocks)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/check_gpu')
    parser.add_argument('--iters', type=int, default=40, help='training iterations per run')
    parser.add_argument('--precisions', nargs='+', default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument('--jobs', type=int, default=3, help='training runs at a time (they share the GPU)')
    parser.add_argument('--threads-per-job', type=int, default=4)
    parser.add_argument('--sizes', nargs='+', default=['224', '512', '1024', '2048'])
    parser.add_argument('--repeats', type=int, default=10, help='timed rounds per size in the sweep')
    parser.add_argument('--job-timeout', type=int, default=600, help='seconds before one run is stopped')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-sweep', action='store_true')
    parser.add_argument('--device', default='cuda', help=argparse.SUPPRESS)  # 'cpu': dry run of this script
    args = parser.parse_args(argv)
    if args.iters < 1 or args.jobs < 1:
        parser.error(f'--iters and --jobs must be >= 1, got {args.iters} and {args.jobs}')
    return args


def main(argv=None):
    args = parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    env = environment()
    print('GPU check:', json.dumps(env, indent=1), flush=True)
    if args.device == 'cuda' and not env['cuda_available']:
        raise SystemExit('no CUDA device visible to torch (torch.cuda.is_available() is False)')
    started = time.time()
    runs, sweeps = [], []
    tests = op_tests(args)
    if not args.skip_train:
        from mmvitattn.datasets.demo_data import make_ade_demo, make_coco_demo
        make_coco_demo(osp.join(REPO, 'data/demo/coco'))
        make_ade_demo(osp.join(REPO, 'data/demo/ade'))
        precisions = args.precisions if args.device == 'cuda' else ['fp32']  # --amp needs CUDA
        jobs = [(name, p) for name in args.configs for p in precisions]
        print(f'\ntraining {len(jobs)} runs of {args.iters} iterations, {args.jobs} at a time', flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda job: train_and_test(*job, args), jobs))
    train_s = time.time() - started
    if not args.skip_sweep:  # alone on the GPU: these are timings
        print('\nresolution sweep', flush=True)
        sweeps = [run_sweep(trunk, dtype, mode, args) for trunk in SWEEPS for dtype in SWEEP_DTYPES
                  for mode in SWEEP_MODES]
    total_s = time.time() - started
    report = dict(environment=env, op_tests=tests, train_s=round(train_s, 1), total_s=round(total_s, 1),
                  training=runs, sweeps=sweeps, time=time.strftime('%Y-%m-%d %H:%M:%S'))
    tables = (f'GPU check on {env.get("gpu", args.device)} (torch {env["torch"]}, CUDA {env["torch_cuda"]}, '
              f'mmcv CUDA ops: {env["mmcv_cuda_ops"]}; fallback ops on: {", ".join(env["fallback_devices"]) or "-"})'
              f', {total_s / 60:.1f} min; fallback op tests: {tests["summary"]}\n\n' + '\n\n'.join(
                  ([training_table(runs)] if runs else []) + ([sweep_table(sweeps)] if sweeps else [])) + '\n')
    write_json(osp.join(args.work_dir, 'check_gpu.json'), report)
    write_text(osp.join(args.work_dir, 'check_gpu.md'), tables)
    print('\n' + tables)
    print(f'written: {osp.join(args.work_dir, "check_gpu.json")} and check_gpu.md')
    failed = [r for r in runs if not r['ok']] + [s for s in sweeps if 'error' in s] + ([] if tests['ok'] else [tests])
    if failed:
        print(f'{len(failed)} run(s) FAILED; logs under {args.work_dir}', file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
