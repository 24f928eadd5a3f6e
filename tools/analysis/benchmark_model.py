"""Whole-model benchmark: latency, peak memory and counted FLOPs of mmdet / mmseg configs (backbone,
neck and heads) in inference and in training, at several input sizes, side by side.

    python tools/analysis/benchmark_model.py \\
        configs/mask_rcnn/mask-rcnn_inline-pvt-t_fpn_1x_coco.py configs/mask_rcnn/mask-rcnn_pvt-t_fpn_1x_coco.py \\
        --sizes 320x480 800x1333 --mode infer train --threads 2 --out work_dirs/bench/mrcnn.json \\
        --plot work_dirs/bench/mrcnn.png

Measurements, per config and size (float32, random weights unless ``--checkpoint``; batch 1, except a
segmentor's training step, which takes ``TRAIN_BATCH`` = 2 images):

- ``infer``: ``model.test_step`` on one synthetic image of that size (data preprocessor and
  post-processing included: NMS, mask pasting, mmseg's whole-image or sliding-window inference as
  the config says) in eval mode without gradients;
- ``forward`` (measured with ``infer``): the model without post-processing on the preprocessed image
  (backbone, neck, heads; a two-stage detector's RoI heads on 1000 fixed boxes, as the FLOP count);
- ``train``: one ``model.train_step`` (forward, the config's losses, backward and the step of the
  optimizer wrapper built from the config's ``optim_wrapper``) on a synthetic image with a few
  ground-truth boxes and masks (detection) or a random label map (segmentation).

Method (shared with ``benchmark_resolution.py``, which times one trunk):
- Latency: ``--warmup`` untimed calls per config, then up to ``--repeats`` rounds; in each round every
  (config, measurement) runs once in a fresh random order, so machine noise hits them alike.
  Once a size has used ``--time-budget`` seconds, no round beyond ``--min-repeats`` starts.
  The median (min / max) is reported, with the torch thread count. On CUDA, CUDA events.
- Peak memory: one fresh subprocess per (config, size), run first: it builds the model and, per
  measurement (forward, infer, train in this order), makes one warm-up call (for training it also
  creates the optimizer state), then reports what one more call adds at its peak (CPU: ``VmHWM - VmRSS`` with the peak counter reset; CUDA:
  ``max_memory_allocated`` minus the memory allocated before). Weights, optimizer state and input are
  not counted. On CPU the subprocess may use at most ``--mem-limit-gib`` more address space; a
  measurement that does not fit is reported with its error and not timed (a shared machine is
  not driven out of memory).
- FLOPs: :func:`mmvitattn.analysis.model_flops` (every attention op counted by one set of rules) of
  the backbone and of the model without post-processing, at that size; the same for every
  measurement of a config and size.
- Crossover: for each linear-attention config (InLine, Castling) and its softmax twin (found by name:
  ``inline-``/``castling-`` dropped, or given with ``--twin LINEAR=SOFTMAX``), the pixel count where
  its latency / CPU time / memory line crosses the twin's (log-log interpolation between measured
  sizes). CPU time (the process's, all threads summed) is the steadier figure on a shared machine.

Output: a line per measurement while it runs, a table, JSON at ``--out`` (written atomically) and,
with matplotlib, a log-log plot of latency, CPU time and memory against pixels at ``--plot``.
"""
import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # mmengine's import, every process

from benchmark_resolution import measurement_env, peak_memory_mib, time_call  # noqa: E402
from get_flops import ROOT, build_from_config  # noqa: E402

import torch  # noqa: E402

from mmvitattn.analysis import model_flops, parse_size, tensor_forward  # noqa: E402
from mmvitattn.analysis import reporting  # noqa: E402
from mmvitattn.analysis.reporting import cpu_model, loglog_against_pixels, merge_runs, pyplot, save_figure  # noqa: E402

MODES = ('infer', 'train')
MEASUREMENTS = {'infer': ('forward', 'infer'), 'train': ('train', )}
LINEAR_PREFIXES = ('inline-', 'castling-')
CURVES = {'latency_ms': 'latency (ms)', 'cpu_ms': 'CPU time, all threads (ms)', 'peak_mem_mib': 'peak memory (MiB)'}
NUM_GT = 5  # ground-truth objects in the synthetic training sample
# Images in the training step's batch. Segmentors take two: UperNet's pyramid pooling runs a
# BatchNorm on a 1x1 map, which cannot train on one image (mmseg's own training has the same limit).
TRAIN_BATCH = {'mmdet': 1, 'mmseg': 2}


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# ----------------------------------------------------------------------------- model + data
def quiet_mmengine():
    """Keep mmengine's warnings only: at INFO it logs every parameter's initialisation and
    optimizer options (thousands of lines per model), which would bury the progress lines."""
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)


class Bench:
    """One config's model, optimizer wrapper and synthetic sample, ready to run a measurement."""

    def __init__(self, path: str, device: str, checkpoint: Optional[str] = None, train_batch: Optional[int] = None):
        from mmengine.config import Config
        from mmengine.model import revert_sync_batchnorm
        from mmengine.optim import build_optim_wrapper
        self.path, self.name = path, config_name(path)
        self.cfg = Config.fromfile(path)
        self.scope = self.cfg.get('default_scope', 'mmdet')
        self.train_batch = train_batch or TRAIN_BATCH.get(self.scope, 1)
        torch.manual_seed(0)
        self.model = revert_sync_batchnorm(build_from_config(path)).to(device)
        if checkpoint:
            from mmengine.runner import load_checkpoint
            load_checkpoint(self.model, checkpoint, map_location=device)
        else:
            self.model.init_weights()
        self.optim_wrapper = build_optim_wrapper(self.model, self.cfg.optim_wrapper)
        self.device = device
        self.size: Optional[Tuple[int, int]] = None

    def set_size(self, size: Tuple[int, int]):
        self.size = size
        self.data = synthetic_batch(self.scope, self.num_classes(), size)
        self.train_data = (self.data if self.train_batch == 1 else
                           synthetic_batch(self.scope, self.num_classes(), size, self.train_batch))
        self.model.eval()
        with torch.no_grad():
            self.inputs = self.model.data_preprocessor(self.data, False)['inputs']
        self.tensor_model = tensor_forward(self.model, self.inputs.shape[-2:])

    def num_classes(self) -> int:
        model = self.cfg.model
        if self.scope == 'mmseg':
            return model.decode_head.num_classes
        head = model.get('roi_head', {}).get('bbox_head', model.get('bbox_head'))
        return (head[0] if isinstance(head, list) else head)['num_classes']

    def run(self, measurement: str):
        if measurement == 'train':
            self.model.train()
            return self.model.train_step(self.train_data, self.optim_wrapper)  # the logged losses
        self.model.eval()
        with torch.no_grad():
            if measurement == 'infer':
                return self.model.test_step(self.data)
            return self.tensor_model(self.inputs)


def synthetic_batch(scope: str, num_classes: int, size: Tuple[int, int], batch: int = 1) -> dict:
    """``batch`` uint8 images of ``size`` (H, W) as a data loader gives them: with ``NUM_GT`` random
    boxes, labels and masks each (mmdet's ``demo_mm_inputs``), or a random label map (mmseg)."""
    h, w = size
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        data = demo_mm_inputs(batch_size=batch, image_shapes=[(3, h, w)] * batch, num_items=[NUM_GT] * batch,
                              num_classes=num_classes, with_mask=True)
        for sample in data['data_samples']:
            sample.set_metainfo(dict(scale_factor=(1.0, 1.0)))
        return data
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ----------------------------------------------------------------------------- memory + FLOPs
def limit_address_space(extra_gib: float):
    """At most ``extra_gib`` more virtual memory than the process maps now (CPU only): an
    allocation beyond it fails with an error instead of pushing the machine out of memory."""
    with open('/proc/self/status') as f:
        vm_kib = next(int(line.split()[1]) for line in f if line.startswith('VmSize:'))
    limit = vm_kib * 1024 + int(extra_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure_one(path: str, size: Tuple[int, int], measurements: Sequence[str], device: str,
                checkpoint: Optional[str], mem_limit_gib: float, count: bool) -> Dict[str, dict]:
    """FLOPs (``count``) and the peak memory of each measurement, in this order, each after its own
    warm-up call (the FLOP count's traced forward warms ``forward``; training's warm-up also creates
    the optimizer state); meant for a fresh process per config and size. Returns one dict per
    measurement (the FLOPs in each)."""
    bench = Bench(path, device, checkpoint)
    bench.set_size(size)
    counted = {}
    if count:
        counts = model_flops(bench.model, tuple(bench.inputs.shape[-2:]))
        counted = dict(flops=counts['model'].total, flops_backbone=counts['backbone'].total,
                       params=counts['model'].params, params_backbone=counts['backbone'].params)
    if not device.startswith('cuda') and mem_limit_gib > 0:
        limit_address_space(mem_limit_gib)
    results = {}
    for measurement in measurements:
        result = results[measurement] = dict(counted)
        try:
            if not (count and measurement == 'forward'):
                bench.run(measurement)  # warm-up
            out = []
            result['peak_mem_mib'], result['memory_method'] = peak_memory_mib(
                lambda: out.append(bench.run(measurement)), device)
            del out
        except Exception as e:  # noqa: BLE001 -- one failed measurement must not lose the others
            first_line = (str(e).splitlines() or [''])[0][:200]
            out_of_memory = isinstance(e, MemoryError) or 'memory' in str(e).lower() or 'bad_alloc' in str(e)
            result['error'] = (f'out of memory under the {mem_limit_gib:g} GiB limit: {first_line}' if out_of_memory
                               else f'{type(e).__name__}: {first_line}')
    return results


def measure_in_subprocess(args, path: str, size: Tuple[int, int], measurements: Sequence[str]) -> Dict[str, dict]:
    cmd = [sys.executable, os.path.abspath(__file__), path, '--_measure', f'{size[0]}x{size[1]}', *measurements,
           '--device', args.device, '--threads', str(args.threads), '--mem-limit-gib', str(args.mem_limit_gib)]
    cmd += (['--checkpoint', args.checkpoint] if args.checkpoint else []) + ([] if args.no_flops else ['--_count'])
    proc = subprocess.run(cmd, env=measurement_env(args.threads), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        error = lines[-1] if lines else f'measurement process exited with {proc.returncode}'
        return {m: dict(error=error) for m in measurements}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the run
def measurement_list(modes: Sequence[str]) -> List[str]:
    return [m for mode in modes for m in MEASUREMENTS[mode]]


def run_benchmark(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError('--device cuda was asked for but torch.cuda.is_available() is False')
    sizes = [parse_size(s) for s in args.sizes]
    measurements = measurement_list(args.mode)
    benches = [Bench(path, args.device, args.checkpoint) for path in args.configs]
    rng = random.Random(0)
    rows, total = [], len(sizes) * len(benches) * len(measurements)
    result = dict(configs=[os.path.relpath(p, ROOT) for p in args.configs], device=args.device,
                  threads=torch.get_num_threads(), warmup=args.warmup, repeats=args.repeats,
                  dtype='float32', checkpoint=args.checkpoint, torch=torch.__version__,
                  cpu=cpu_model(), time=time.strftime('%Y-%m-%d %H:%M:%S'),
                  rows=rows)
    for size in sizes:
        # Memory and FLOPs first, in a fresh process per config; what does not fit is not timed.
        size_rows = {}
        for bench in benches:
            measured = {} if args.no_memory else measure_in_subprocess(args, bench.path, size, measurements)
            for measurement in measurements:
                row = dict(config=bench.name, config_path=os.path.relpath(bench.path, ROOT),
                           height=size[0], width=size[1], pixels=size[0] * size[1], mode=measurement,
                           batch=bench.train_batch if measurement == 'train' else 1)
                row.update(measured.get(measurement, {}))
                size_rows[bench.name, measurement] = row
                print(f'[{len(rows) + len(size_rows)}/{total}] {bench.name} {size[0]}x{size[1]} {measurement}: '
                      f'peak {fmt(row.get("peak_mem_mib"), ".0f")} MiB'
                      + (f' ({row["error"]})' if 'error' in row else ''), flush=True)
        jobs = [(b, m) for b in benches for m in measurements if 'error' not in size_rows[b.name, m]]
        for bench in benches:
            if any(b is bench for b, _ in jobs):
                bench.set_size(size)
        for bench, measurement in jobs:
            for _ in range(args.warmup):
                bench.run(measurement)
        times: Dict[Tuple[str, str], List[Tuple[float, float]]] = {(b.name, m): [] for b, m in jobs}
        start = time.perf_counter()
        for r in range(args.repeats):
            if r >= args.min_repeats and time.perf_counter() - start > args.time_budget:
                break
            order = jobs[:]
            rng.shuffle(order)
            for bench, measurement in order:
                wall, cpu = time_call(lambda: bench.run(measurement), args.device)
                times[bench.name, measurement].append((wall, cpu))
                print(f'  round {r + 1}: {bench.name} {size[0]}x{size[1]} {measurement}: {1e3 * wall:.0f} ms', flush=True)
        for key, row in size_rows.items():
            if key in times:
                walls, cpus = [1e3 * t[0] for t in times[key]], [1e3 * t[1] for t in times[key]]
                row.update(latency_ms=statistics.median(walls), latency_min_ms=min(walls),
                           latency_max_ms=max(walls), cpu_ms=statistics.median(cpus), repeats=len(walls),
                           latency_all_ms=walls)
            rows.append(row)
        if args.out:  # what a long run has measured so far survives an interruption
            write_json(result, args.out)
    return result


# ----------------------------------------------------------------------------- crossovers
def softmax_twin(name: str, names: Sequence[str], twins: Dict[str, str]) -> Optional[str]:
    """The softmax config ``name`` is compared with: ``--twin`` first, else the name with its
    ``inline-`` / ``castling-`` prefix dropped, when that config was measured."""
    if name in twins:
        return twins[name]
    for prefix in LINEAR_PREFIXES:
        if f'_{prefix}' in name:
            twin = name.replace(f'_{prefix}', '_', 1)
            return twin if twin in names else None
    return None


def crossover(lin: Sequence[Tuple[float, float]], soft: Sequence[Tuple[float, float]]) -> dict:
    """Where the linear config's curve goes below its twin's, from (pixels, value) points at the
    same sizes: ``pixels`` (log-log interpolated between the last size it loses and the first it
    wins from there on), or ``wins_from_smallest`` / ``never`` within the measured sizes."""
    pts = sorted((p, a, b) for (p, a), (q, b) in zip(sorted(lin), sorted(soft)) if p == q and a and b)
    if not pts:
        return dict(status='no common sizes')
    wins = [a < b for _, a, b in pts]
    if all(wins):
        return dict(status='wins_from_smallest', pixels=pts[0][0])
    if not wins[-1]:
        return dict(status='never', ratio_at_largest=pts[-1][2] / pts[-1][1])
    last_loss = max(i for i, w in enumerate(wins) if not w)
    (p0, a0, b0), (p1, a1, b1) = pts[last_loss], pts[last_loss + 1]
    d0, d1 = math.log(a0 / b0), math.log(a1 / b1)  # >= 0 then < 0
    t = d0 / (d0 - d1)
    return dict(status='crosses', pixels=math.exp(math.log(p0) + t * (math.log(p1) - math.log(p0))))


def crossovers(result: dict, twins: Dict[str, str]) -> List[dict]:
    rows = [r for r in result['rows'] if r.get('latency_ms') or r.get('peak_mem_mib')]
    names = list(dict.fromkeys(r['config'] for r in result['rows']))
    out = []
    for name in names:
        twin = softmax_twin(name, names, twins)
        if twin is None:
            continue
        for mode in dict.fromkeys(r['mode'] for r in rows):
            entry = dict(config=name, twin=twin, mode=mode)
            for key in CURVES:
                curves = [[(r['pixels'], r.get(key)) for r in rows if r['config'] == c and r['mode'] == mode]
                          for c in (name, twin)]
                entry[key] = crossover(*curves)
            out.append(entry)
    return out


def describe_crossover(c: dict) -> str:
    if c['status'] == 'crosses':
        side = math.sqrt(c['pixels'])
        return f'from ~{c["pixels"] / 1e6:.2f} MP (~{side:.0f}^2)'
    if c['status'] == 'wins_from_smallest':
        return f'at every size measured (from {c["pixels"] / 1e6:.2f} MP)'
    if c['status'] == 'never':
        return f'not within the sizes measured (twin/linear {c["ratio_at_largest"]:.2f}x at the largest)'
    return c['status']


# ----------------------------------------------------------------------------- output
def fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def print_table(result: dict):
    print(f'\n{result["device"]} ({result.get("cpu", "?")}), {result["threads"]} threads, float32, batch 1 (segmentor training: 2); median of up to '
          f'{result["repeats"]} rounds')
    print(f'{"config":<52} {"size":>10} {"mode":>8} {"latency ms":>11} {"min-max ms":>17} {"CPU ms":>9} '
          f'{"peak MiB":>9} {"GFLOPs bb/all":>14}')
    for r in result['rows']:
        spread = (f'{r["latency_min_ms"]:.0f}-{r["latency_max_ms"]:.0f}' if 'latency_min_ms' in r else '-')
        gflops = (f'{r["flops_backbone"] / 1e9:.0f}/{r["flops"] / 1e9:.0f}' if r.get('flops') else '-')
        print(f'{r["config"][:52]:<52} {r["height"]:>4}x{r["width"]:<5} {r["mode"]:>8} '
              f'{fmt(r.get("latency_ms"), ".0f"):>11} {spread:>17} {fmt(r.get("cpu_ms"), ".0f"):>9} '
              f'{fmt(r.get("peak_mem_mib"), ".0f"):>9} '
              f'{gflops:>14}' + (f'  ({r["error"]})' if 'error' in r else ''))
    if result.get('crossovers'):
        print('\nwhere each linear-attention config overtakes its softmax twin (lower latency / memory):')
        for c in result['crossovers']:
            print(f'  {c["config"]} vs {c["twin"]}, {c["mode"]}: latency {describe_crossover(c["latency_ms"])}; '
                  f'CPU time {describe_crossover(c["cpu_ms"])}; memory {describe_crossover(c["peak_mem_mib"])}')


def plot(result: dict, path: str):
    plt = pyplot()
    if plt is None:
        return
    modes = list(dict.fromkeys(r['mode'] for r in result['rows']))
    fig, axes = plt.subplots(len(modes), len(CURVES), figsize=(18, 4.2 * len(modes)), squeeze=False)
    names = list(dict.fromkeys(r['config'] for r in result['rows']))
    colors = {name: f'C{i % 10}' for i, name in enumerate(names)}
    for i, mode in enumerate(modes):
        for j, (key, label) in enumerate(CURVES.items()):
            ax = axes[i][j]
            for name in names:
                pts = sorted((r['pixels'], r[key]) for r in result['rows']
                             if r['config'] == name and r['mode'] == mode and r.get(key))
                if pts:
                    linear = softmax_twin(name, names, result.get('twins', {})) is not None
                    ax.plot(*zip(*pts), marker='o', color=colors[name], label=name,
                            linestyle='-' if linear else '--')
            for c in result.get('crossovers', []):
                if c['mode'] == mode and c[key]['status'] == 'crosses':
                    ax.axvline(c[key]['pixels'], color=colors[c['config']], linestyle=':', alpha=0.8)
            loglog_against_pixels(ax, f'{mode}: {label}')
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f'whole model, batch 1 (segmentor training 2), {result["device"]} ({result["threads"]} threads); solid: linear '
                 'attention, dashed: softmax; dotted verticals: where a linear config overtakes its twin',
                 fontsize=9)
    save_figure(fig, path, dpi=110)


def write_json(result: dict, path: str):
    reporting.write_json(path, result)
    print(f'results written to {path}')


def merge_results(paths: Sequence[str]) -> dict:
    """The rows of several runs (e.g. the largest sizes run separately), in one result."""
    merged = merge_runs(paths)
    merged['configs'] = list(dict.fromkeys(c for r in merged['runs'] for c in r['configs']))
    return merged


# ----------------------------------------------------------------------------- command line
def parse_twins(items: Sequence[str]) -> Dict[str, str]:
    twins = {}
    for item in items:
        if item.count('=') != 1:
            raise ValueError(f'bad --twin {item!r}; expected LINEAR_CONFIG=SOFTMAX_CONFIG (config names or paths)')
        lin, soft = item.split('=')
        twins[config_name(lin)] = config_name(soft)
    return twins


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='mmdet / mmseg config files')
    parser.add_argument('--sizes', nargs='+', default=['800x1333'], help='input sizes: HxW (height first) or S')
    parser.add_argument('--mode', nargs='+', default=list(MODES), choices=MODES,
                        help="'infer' (test_step and the forward without post-processing) and/or 'train'")
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (CPU)')
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds per size (at most)')
    parser.add_argument('--min-repeats', type=int, default=1,
                        help='rounds always run; more only while the size is within --time-budget')
    parser.add_argument('--time-budget', type=float, default=300,
                        help='seconds of timed rounds per size after which no new round starts')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls per config and size')
    parser.add_argument('--checkpoint', default=None, help='weights to load into every model (default: random)')
    parser.add_argument('--twin', nargs='+', default=[], metavar='LINEAR=SOFTMAX',
                        help='pairs to compare when the names do not say it')
    parser.add_argument('--mem-limit-gib', type=float, default=12.0,
                        help='CPU: address space a memory measurement may add (0: no limit)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory / FLOP subprocesses')
    parser.add_argument('--no-flops', action='store_true', help='skip FLOP counting')
    parser.add_argument('--out', default=None, help='JSON output path')
    parser.add_argument('--plot', default=None, help='plot output path (png/svg)')
    parser.add_argument('--from-json', nargs='+', default=None,
                        help='measure nothing: merge these result files into one table / JSON / plot')
    parser.add_argument('--_measure', nargs='+', help=argparse.SUPPRESS)
    parser.add_argument('--_count', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.configs and not args.from_json:
        parser.error('give config files (or --from-json)')
    if args.repeats < 1 or args.warmup < 0 or args.min_repeats < 1 or args.threads < 1:
        parser.error(f'--repeats, --min-repeats and --threads must be >= 1 and --warmup >= 0, got '
                     f'{args.repeats}, {args.min_repeats}, {args.threads} and {args.warmup}')
    for path in args.configs + ([args.checkpoint] if args.checkpoint else []):
        if not os.path.isfile(path):
            parser.error(f'file not found: {path}')
    try:
        for s in args.sizes:
            parse_size(s)
        args.twins = parse_twins(args.twin)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    quiet_mmengine()
    if args._measure:
        size, *measurements = args._measure
        torch.set_num_threads(args.threads)
        print(json.dumps(measure_one(args.configs[0], parse_size(size), measurements, args.device,
                                     args.checkpoint, args.mem_limit_gib, args._count)))
        return
    result = merge_results(args.from_json) if args.from_json else run_benchmark(args)
    result['twins'] = {**result.get('twins', {}), **args.twins}
    result['crossovers'] = crossovers(result, result['twins'])
    print_table(result)
    if args.out:
        write_json(result, args.out)
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == '__main__':
    main()
