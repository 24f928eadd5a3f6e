"""Resolution sweep: inference or training-step latency, peak memory and counted FLOPs of one
backbone trunk with several token mixers, side by side, on CPU or CUDA, at a chosen batch.

    python tools/analysis/benchmark_resolution.py --trunk deit-s \
        --attention none proj softmax inline castling armour --sizes 224 512 1024 2048 800x1280 \
        --threads 2 --mode infer --out work_dirs/bench/deit-s.json --plot work_dirs/bench/deit-s.png

Method
- Every variant is built once (random weights, eval mode, float32 weights; ``--dtype bfloat16`` /
  ``float16`` run under autocast) with the same seed, and runs on a batch of ``--batch`` images.
  ``--mode infer`` times a forward without autograd. ``--mode train`` times a training step: a
  forward with autograd and the backward of the sum of the outputs, with gradients on every weight
  (dropped before each step). The modules stay in eval mode (no dropout, no Castling auxiliary
  branch), so both modes time the same function. (``forward`` and ``forward-backward`` are accepted
  as the old names of ``infer`` and ``train``.)
  ``none`` is the attention-free floor: the same trunk with every token mixer replaced by the
  identity, i.e. the cost every variant shares (patch embedding, norms, MLPs, outputs). ``proj``
  also keeps the mixer's q/k/v and output projections (returns proj(v)): the cost any q/k/v
  attention has before it mixes a token, so ``latency / proj`` is the price of the mixing itself.
- Latency: ``--warmup`` untimed forwards per variant, then ``--repeats`` rounds (fewer, but at least
  ``--min-repeats``, once a size has used ``--time-budget`` seconds); in each round every variant
  runs once, in a fresh random order, so machine noise hits all of them alike. The median
  (and min / max) per variant is reported, with ``torch.get_num_threads()`` stated. On CUDA each
  forward is timed with CUDA events after a synchronize. Also reported: the median CPU time of the
  process over the forward (all threads summed). On a machine shared with other work it is the
  steadier number: with ``--threads 1`` it is close to the latency the forward would have alone,
  whereas wall-clock time then includes waiting for a core (and, with several threads, waiting at
  every parallel region for a descheduled thread).
- Peak memory, CPU: one fresh subprocess per (variant, size). It builds the model, runs one warm-up
  pass (of the timed kind), then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and reports
  ``VmHWM - VmRSS`` around one more pass: the resident memory the pass adds at its peak
  (activations, workspaces; in a training step also what autograd keeps for the backward and the
  weights' gradients, dropped before the pass), not counting the weights or the input. glibc is told to mmap every
  allocation of 64 KiB or more and to trim freed memory (``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``), so tensors freed by the warm-up really leave the resident set and the
  second forward's peak is measured rather than hidden by recycled pages.
  Peak memory, CUDA (in the sweep's process): ``torch.cuda.max_memory_allocated()`` over one pass
  minus the memory allocated before it.
- Recorded with the results: which scaled-dot-product-attention kernel ran (flash, efficient,
  cudnn, math; read from the profiler's op names in one untimed pass per variant and size), and
  the TF32 settings of matmul and cuDNN, the GPU, torch's CUDA and cuDNN versions.
- FLOPs: counted by :func:`mmvitattn.analysis.backbone_flops` (every attention op counted by the
  same rules; see ``mmvitattn/analysis/flops.py``), in the same subprocess, in float32, for one
  image, times ``--batch``. A training step is counted as 3x its forward: the backward of a product
  is two products of the same size (the input's and the weight's gradients), the usual rule, here
  applied to every counted op alike. So the counted ratios between variants are the same in both
  modes (the backward the trunk's first layer does not need for its input is counted, alike for all).
- Ratios, per size (in the JSON rows and the printed summary): latency / ``proj`` latency, peak
  memory / ``proj`` peak memory, the speed-up over softmax (softmax latency / latency) beside the
  counted-FLOP ratio softmax / variant, and their quotient (1 = the speed-up the arithmetic allows).
- ``--runtime torch onnxruntime``: every variant also runs as an ONNX graph in onnxruntime (CPU,
  ``--threads`` intra-op threads), exported once with dynamic height and width
  (:func:`mmvitattn.deployment.trace_onnx`) and timed in the same interleaved rounds as the PyTorch
  rows; its row records the largest |onnxruntime - torch| output difference at each size. Memory
  and FLOPs are measured for the PyTorch rows only.

Output: a table on stdout, the JSON written to ``--out``, and (with matplotlib) a log-log plot of
latency and memory against pixels at ``--plot``.
"""
import argparse
import functools
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmvitattn.analysis import backbone_flops, parse_size  # noqa: E402
from mmvitattn.analysis.reporting import cpu_model, loglog_against_pixels, merge_runs, pyplot, save_figure, write_json  # noqa: E402
from mmvitattn.attention import ATTENTIONS  # noqa: E402

# Trunks: (backbone class name, keyword arguments). Only the trunk runs (no pyramid, no head).
TRUNKS: Dict[str, Tuple[str, dict]] = {
    'deit-t': ('ViT', dict(arch='deit-t')),
    'deit-s': ('ViT', dict(arch='deit-s')),
    'deit-b': ('ViT', dict(arch='deit-b')),
    'pvt-t': ('PVT', dict(arch='t', out_indices=(3, ))),
    'pvt-s': ('PVT', dict(arch='s', out_indices=(3, ))),
}
FLOOR = 'none'
PROJ_FLOOR = 'proj'
FLOORS = (FLOOR, PROJ_FLOOR)


class IdentityMixer(nn.Module):
    """The attention-free floor: a token mixer that returns its input."""

    def forward(self, x, hw, pad_mask=None):
        return x


class ProjectionFloor(nn.Module):
    """The projection floor: a mixer's q/k/v and output projections with no mixing in between
    (returns proj(v)); what any q/k/v attention costs before it mixes a single token."""

    def __init__(self, mixer: nn.Module):
        super().__init__()
        self.mixer = mixer

    def forward(self, x, hw, pad_mask=None):
        _, _, v = self.mixer.project_tokens(x)
        return self.mixer.output(v)


def check_attention(name: str):
    if name not in FLOORS and name not in ATTENTIONS:
        raise ValueError(f'unknown attention {name!r}; expected {FLOOR!r} (attention-free floor), '
                         f'{PROJ_FLOOR!r} (projections only) or one of {sorted(ATTENTIONS)}')


def build_trunk(trunk: str, attention: str) -> nn.Module:
    """The trunk with ``attention`` in every block (``'none'``: identity mixers; ``'proj'``: the
    softmax mixer's projections only)."""
    from mmvitattn import backbones
    if trunk not in TRUNKS:
        raise ValueError(f'unknown trunk {trunk!r}; expected one of {sorted(TRUNKS)}')
    check_attention(attention)
    cls_name, kwargs = TRUNKS[trunk]
    torch.manual_seed(0)
    model = getattr(backbones, cls_name)(attention='softmax' if attention in FLOORS else attention,
                                         **kwargs)
    if attention in FLOORS:
        for module in model.modules():
            if hasattr(module, 'attn') and hasattr(module.attn, 'attention_name'):
                module.attn = IdentityMixer() if attention == FLOOR else ProjectionFloor(module.attn)
    return model.eval()


def parse_dtype(name: str) -> torch.dtype:
    table = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
    if name not in table:
        raise ValueError(f'unknown dtype {name!r}; expected one of {sorted(table)}')
    return table[name]


def make_input(size: Tuple[int, int], device: str, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)


MODES = ('infer', 'train')
MODE_ALIASES = {'forward': 'infer', 'forward-backward': 'train'}  # the old names
TRAIN_FLOP_FACTOR = 3  # forward + backward (two products per forward product)


def forward(model: nn.Module, x: torch.Tensor, dtype: torch.dtype, mode: str = 'infer'):
    """One pass: a forward without autograd (``mode='infer'``), or a training step, a forward and
    the backward of the outputs' sum (``mode='train'``; the parameters' gradients are dropped first)."""
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f'unknown mode {mode!r}; expected one of {MODES}')
    if mode == 'train':
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(x)
            loss = sum(o.float().sum() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        return None
    with torch.inference_mode():
        if dtype == torch.float32:
            return model(x)
        with torch.autocast(x.device.type, dtype=dtype):
            return model(x)


def time_call(fn, device: str) -> Tuple[float, float]:
    """Seconds for one ``fn()``: (wall-clock, CPU time of this process over all its threads). On
    CUDA the wall-clock figure comes from CUDA events recorded after a synchronize."""
    if device.startswith('cuda'):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        c0 = time.process_time()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3, time.process_time() - c0
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def time_once(run, x, device: str) -> Tuple[float, float]:
    """Seconds for one pass ``run(x)``: (wall-clock, CPU time of this process over all its threads)."""
    return time_call(lambda: run(x), device)


# Profiler op names of torch's scaled-dot-product-attention kernels -> the backend's name.
SDPA_KERNELS = {
    'aten::_scaled_dot_product_flash_attention': 'flash',
    'aten::_scaled_dot_product_flash_attention_for_cpu': 'flash (cpu)',
    'aten::_scaled_dot_product_efficient_attention': 'efficient',
    'aten::_scaled_dot_product_cudnn_attention': 'cudnn',
    'aten::_scaled_dot_product_attention_math': 'math',
    'aten::_scaled_dot_product_fused_attention_overrideable': 'overrideable',
}


def sdpa_backends(model, x, dtype, mode: str) -> List[str]:
    """The SDPA kernels one pass runs (read from the profiler's op names; [] when none runs)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        forward(model, x, dtype, mode)
    if x.device.type == 'cuda':
        torch.cuda.synchronize()
    return sorted({SDPA_KERNELS[e.key] for e in prof.key_averages() if e.key in SDPA_KERNELS})


def numeric_settings(device: str) -> dict:
    """TF32 switches and library versions that decide what the GPU timings mean."""
    settings = dict(float32_matmul_precision=torch.get_float32_matmul_precision(),
                    cuda_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    cuda_matmul_fp32_precision=getattr(torch.backends.cuda.matmul, 'fp32_precision', None))
    if device.startswith('cuda'):
        props = torch.cuda.get_device_properties(torch.device(device))
        settings.update(gpu=props.name, gpu_capability=f'{props.major}.{props.minor}',
                        gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                        cudnn=torch.backends.cudnn.version(),
                        sdpa_enabled=dict(flash=torch.backends.cuda.flash_sdp_enabled(),
                                          efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
                                          cudnn=torch.backends.cuda.cudnn_sdp_enabled(),
                                          math=torch.backends.cuda.math_sdp_enabled()))
    return settings


def cuda_peak_memory(model, x, dtype, mode: str) -> dict:
    """Peak memory one pass adds on the GPU (caching-allocator statistics; in this process)."""
    if MODE_ALIASES.get(mode, mode) == 'train':
        model.zero_grad(set_to_none=True)
    out = []
    peak, method = peak_memory_mib(lambda: out.append(forward(model, x, dtype, mode)), 'cuda')
    return dict(peak_mem_mib=peak, memory_method=f'{method} (one pass)')


RUNTIMES = ('torch', 'onnxruntime')


def onnxruntime_runner(model: nn.Module, threads: int, workdir: str, batch: int = 1):
    """The trunk exported to ONNX (dynamic height and width) and run by onnxruntime on CPU:
    a callable images -> list of numpy outputs."""
    from mmvitattn.deployment import BackboneGraph, onnxruntime_session, trace_onnx
    program, _ = trace_onnx(BackboneGraph(model), batch=batch, dynamic_batch=False)
    path = os.path.join(workdir, f'trunk{len(os.listdir(workdir))}.onnx')
    program.save(path, external_data=False)
    session = onnxruntime_session(path, threads=threads)
    return lambda x: session.run(None, {'images': x.numpy()})


def max_difference(torch_model: nn.Module, run, x: torch.Tensor) -> float:
    """Largest |runtime - torch| over the trunk's outputs for input ``x``."""
    with torch.inference_mode():
        refs = torch_model(x)
    refs = (refs, ) if isinstance(refs, torch.Tensor) else tuple(refs)
    return max(float((torch.as_tensor(o) - r).abs().max()) for o, r in zip(run(x), refs))


# ----------------------------------------------------------------------------- memory + FLOPs
def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not found in /proc/self/status')


def measure_one(trunk: str, attention: str, size: Tuple[int, int], device: str, dtype: torch.dtype,
                count: bool, mode: str = 'infer', batch: int = 1) -> dict:
    """Peak memory of one pass (inference, or a training step; after a warm-up one) and the counted
    FLOPs of that pass (see the module docstring); run in a fresh process."""
    model = build_trunk(trunk, attention).to(device)
    x = make_input(size, device, batch)
    result = dict(params=sum(p.numel() for p in model.parameters()))
    if count:
        result['forward_flops'] = backbone_flops(model, size).total * batch
        result['flops'] = pass_flops(result['forward_flops'], mode)
    # Warm-up: one-time allocations (kernel caches, gradient buffers' first allocation) happen here.
    forward(model, x, dtype, mode)
    model.zero_grad(set_to_none=True)  # a training step's peak then includes its gradients
    out = []
    result['peak_mem_mib'], result['memory_method'] = peak_memory_mib(
        lambda: out.append(forward(model, x, dtype, mode)), device)
    del out
    return result


def pass_flops(forward_flops: int, mode: str) -> int:
    """Counted FLOPs of one pass from those of its forward: 3x for a training step."""
    return forward_flops * (TRAIN_FLOP_FACTOR if MODE_ALIASES.get(mode, mode) == 'train' else 1)


def peak_memory_mib(fn, device: str) -> Tuple[float, str]:
    """Memory one ``fn()`` adds at its peak, in MiB, and how it was measured. Call it in a fresh
    process after a warm-up call (see the module docstring); on CPU the process should run with
    :func:`measurement_env`."""
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return ((torch.cuda.max_memory_allocated() - before) / 2**20,
                'cuda max_memory_allocated - allocated before')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current RSS
    before = _status_kib('VmRSS')
    fn()
    return ((_status_kib('VmHWM') - before) / 1024,
            'VmHWM - VmRSS around one call (fresh process, after a warm-up)')


def measurement_env(threads: int) -> Dict[str, str]:
    """The environment of a peak-memory subprocess: large blocks straight from/back to the OS, so
    freed tensors leave the resident set; ``threads`` OpenMP threads; this checkout importable."""
    env = dict(os.environ)
    env.update(MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0',
               OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    return env


def measure_in_subprocess(args, attention: str, size: Tuple[int, int]) -> dict:
    env = measurement_env(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), '--_measure', args.trunk, attention,
           f'{size[0]}x{size[1]}', '--device', args.device, '--dtype', args.dtype, '--mode', args.mode,
           '--threads', str(args.threads), '--batch', str(args.batch)] + ([] if args.no_flops else ['--_count'])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed')
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- sweep
def run_sweep(args) -> dict:
    sizes = [parse_size(s) for s in args.sizes]
    dtype = parse_dtype(args.dtype)
    torch.set_num_threads(args.threads)
    variants = list(dict.fromkeys(args.attention))
    for name in variants:
        check_attention(name)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError('--device cuda was asked for but torch.cuda.is_available() is False')
    models = {name: build_trunk(args.trunk, name).to(args.device) for name in variants}
    # What is timed: (attention, runtime) -> callable images -> outputs.
    runners = {}
    with tempfile.TemporaryDirectory() as workdir:
        for runtime in args.runtime:
            for name in variants:
                runners[name, runtime] = (functools.partial(forward, models[name], dtype=dtype, mode=args.mode) if runtime == 'torch'
                                          else onnxruntime_runner(models[name], args.threads, workdir, args.batch))
    keys = list(runners)
    rng = random.Random(0)
    rows = []
    for size in sizes:
        x = make_input(size, args.device, args.batch)
        times: Dict[tuple, List[float]] = {key: [] for key in keys}
        cpu_times: Dict[tuple, List[float]] = {key: [] for key in keys}
        for key in keys:
            for _ in range(args.warmup):
                runners[key](x)
        start = time.perf_counter()
        for r in range(args.repeats):
            if r >= args.min_repeats and time.perf_counter() - start > args.time_budget:
                break  # enough rounds for a median at this size
            order = keys[:]
            rng.shuffle(order)
            for key in order:
                wall, cpu = time_once(runners[key], x, args.device)
                times[key].append(wall)
                cpu_times[key].append(cpu)
        on_cuda = args.device.startswith('cuda')
        # Which SDPA kernel ran (on CUDA it depends on size, dtype and GPU): one untimed pass each.
        extra = {name: dict(sdpa=sdpa_backends(models[name], x, dtype, args.mode)) if on_cuda else {}
                 for name in variants}
        if on_cuda and not args.no_memory:
            for name in variants:
                extra[name].update(cuda_peak_memory(models[name], x, dtype, args.mode))
        if on_cuda and not args.no_flops:  # counted in this process
            for name in variants:
                extra[name]['forward_flops'] = backbone_flops(models[name], size).total * args.batch
                extra[name]['flops'] = pass_flops(extra[name]['forward_flops'], args.mode)
        for key in keys:
            name, runtime = key
            row = dict(attention=name, runtime=runtime, height=size[0], width=size[1], pixels=size[0] * size[1],
                       batch=args.batch, mode=args.mode, latency_ms=1e3 * statistics.median(times[key]),
                       latency_per_image_ms=1e3 * statistics.median(times[key]) / args.batch,
                       latency_min_ms=1e3 * min(times[key]), latency_max_ms=1e3 * max(times[key]),
                       cpu_ms=1e3 * statistics.median(cpu_times[key]),
                       repeats=len(times[key]), latency_all_ms=[1e3 * t for t in times[key]])
            if runtime != 'torch':
                row['max_abs_diff_vs_torch'] = max_difference(models[name], runners[key], x)
            else:
                row.update(extra[name])
                if not on_cuda and not args.no_memory:
                    row.update(measure_in_subprocess(args, name, size))
            rows.append(row)
            print_row(row, header=len(rows) == 1)
        add_ratios(rows[-len(keys):])
        del x
    return dict(trunk=args.trunk, device=args.device, dtype=args.dtype, mode=args.mode,
                numerics=numeric_settings(args.device), threads=torch.get_num_threads(),
                runtimes=list(args.runtime),
                warmup=args.warmup, repeats=args.repeats, batch=args.batch, torch=torch.__version__,
                cpu=cpu_model(), time=time.strftime('%Y-%m-%d %H:%M:%S'),
                rows=rows)


def merge_results(paths: List[str]) -> dict:
    """Rows of several runs of one trunk (e.g. the large sizes run separately), sorted by size."""
    merged = merge_runs(paths)
    trunks = {r['trunk'] for r in merged['runs']}
    if len(trunks) != 1:
        raise ValueError(f'--from-json files are for different trunks {sorted(trunks)}; merge one trunk at a time')
    setups = {(MODE_ALIASES.get(r.get('mode', 'infer'), r.get('mode', 'infer')), r.get('batch', 1))
              for r in merged['runs']}
    if len(setups) != 1:
        raise ValueError(f'--from-json files have different (mode, batch) {sorted(setups)}; merge one setup at a time')
    merged['rows'].sort(key=lambda r: r['pixels'])
    sizes: Dict[Tuple[int, int], List[dict]] = {}
    for row in merged['rows']:
        sizes.setdefault((row['height'], row['width']), []).append(row)
    for rows in sizes.values():
        add_ratios(rows)
    return merged


def print_row(row: dict, header: bool = False):
    if header:
        print(f'{"attention":>10} {"runtime":>11} {"size (HxW)":>11} {"latency ms":>11} {"min-max ms":>17} '
              f'{"CPU ms":>9} {"peak MiB":>9} {"GFLOPs":>8}', flush=True)
    mem = row.get('peak_mem_mib')
    flops = row.get('flops')
    diff = row.get('max_abs_diff_vs_torch')
    print(f'{row["attention"]:>10} {row.get("runtime", "torch"):>11} {row["height"]:>5}x{row["width"]:<5} '
          f'{row["latency_ms"]:>11.1f} {row["latency_min_ms"]:>8.1f}-{row["latency_max_ms"]:<8.1f} '
          f'{row["cpu_ms"]:>9.1f} {"-" if mem is None else f"{mem:.0f}":>9} '
          f'{"-" if flops is None else f"{flops / 1e9:.1f}":>8}'
          + (f'  (max |diff| vs torch {diff:.1e})' if diff is not None else '')
          + (f'  sdpa: {"+".join(row["sdpa"])}' if row.get('sdpa') else '')
          + (f'  ({row["error"]})' if 'error' in row else ''), flush=True)


BASELINES = ('softmax', 'sra')  # what the speed-ups are measured against (the first one present)


def add_ratios(rows: List[dict]) -> None:
    """Add, in place, to the PyTorch rows of one size: ``latency_vs_<floor>`` and
    ``peak_mem_vs_<floor>`` (variant / floor), ``speedup_vs_<baseline>`` (baseline latency /
    variant latency), ``flop_ratio_vs_<baseline>`` (baseline FLOPs / variant FLOPs) and
    ``speedup_of_flop_ratio`` (the first over the second: 1 = as fast as the arithmetic allows)."""
    by_name = {r['attention']: r for r in rows if r.get('runtime', 'torch') == 'torch'}
    baseline = next((b for b in BASELINES if b in by_name), None)
    for name, row in by_name.items():
        for floor in FLOORS:
            ref = by_name.get(floor)
            if ref is None or name == floor:
                continue
            row[f'latency_vs_{floor}'] = row['latency_ms'] / ref['latency_ms']
            if row.get('peak_mem_mib') and ref.get('peak_mem_mib'):
                row[f'peak_mem_vs_{floor}'] = row['peak_mem_mib'] / ref['peak_mem_mib']
        if baseline is None or name in FLOORS or name == baseline:
            continue
        ref = by_name[baseline]
        row[f'speedup_vs_{baseline}'] = ref['latency_ms'] / row['latency_ms']
        row[f'cpu_speedup_vs_{baseline}'] = ref['cpu_ms'] / row['cpu_ms']
        if row.get('flops') and ref.get('flops'):
            row[f'flop_ratio_vs_{baseline}'] = ref['flops'] / row['flops']
            row['speedup_of_flop_ratio'] = row[f'speedup_vs_{baseline}'] / row[f'flop_ratio_vs_{baseline}']


def _ratio(row: dict, key: str, width: int = 7) -> str:
    return f'{row[key]:>{width}.2f}' if row.get(key) is not None else f'{"-":>{width}}'


def print_summary(result: dict):
    """Per size, one line per variant: latency per image, the ratios of :func:`add_ratios`, and
    the speed-up in CPU time (all threads) beside the wall-clock one."""
    by_size: Dict[Tuple[int, int], Dict[str, dict]] = {}
    runtime_rows: Dict[Tuple[int, int], List[Tuple[dict, dict]]] = {}
    for row in result['rows']:
        if row.get('runtime', 'torch') == 'torch':
            by_size.setdefault((row['height'], row['width']), {})[row['attention']] = row
    for row in result['rows']:
        size = (row['height'], row['width'])
        if row.get('runtime', 'torch') != 'torch' and row['attention'] in by_size.get(size, {}):
            runtime_rows.setdefault(size, []).append((row, by_size[size][row['attention']]))
    batch = result.get('batch', 1)
    print(f'\nratios - trunk {result["trunk"]}, {result["device"]}, {result["threads"]} threads, '
          f'{result["dtype"]}, mode {MODE_ALIASES.get(result.get("mode"), result.get("mode", "infer"))}, '
          f'batch {batch}' + (f', {result["cpu"]}' if result.get('cpu') else ''))
    baseline = next((b for b in BASELINES if any(b in rows for rows in by_size.values())), 'softmax')
    print(f'  x{PROJ_FLOOR}, x{FLOOR}: latency / the floor\'s; mem x{PROJ_FLOOR}: peak memory / proj\'s; '
          f'speed-up: {baseline} latency / latency [CPU time]; FLOP ratio: {baseline} / variant, '
          'counted; of FLOPs: speed-up / FLOP ratio')
    print(f'  {"size":>10} {"attention":>10} {"ms/image":>9} {"x" + PROJ_FLOOR:>7} {"x" + FLOOR:>7} '
          f'{"mem x" + PROJ_FLOOR:>10} {"speed-up":>8} {"[CPU]":>7} {"FLOP ratio":>10} {"of FLOPs":>8}')
    for size, rows in by_size.items():
        for name, row in rows.items():
            per_image = row.get('latency_per_image_ms', row['latency_ms'] / row.get('batch', 1))
            print(f'  {f"{size[0]}x{size[1]}":>10} {name:>10} {per_image:>9.1f} '
                  f'{_ratio(row, f"latency_vs_{PROJ_FLOOR}")} {_ratio(row, f"latency_vs_{FLOOR}")} '
                  f'{_ratio(row, f"peak_mem_vs_{PROJ_FLOOR}", 10)} {_ratio(row, f"speedup_vs_{baseline}", 8)} '
                  f'{_ratio(row, f"cpu_speedup_vs_{baseline}")} {_ratio(row, f"flop_ratio_vs_{baseline}", 10)} '
                  f'{_ratio(row, "speedup_of_flop_ratio", 8)}')
        for row, ref in runtime_rows.get(size, []):
            print(f'    {row["attention"]:>9} in {row["runtime"]}: {ref["latency_ms"] / row["latency_ms"]:.2f}x '
                  f'[{ref["cpu_ms"] / row["cpu_ms"]:.2f}x] faster than in torch')


def plot(result: dict, path: str):
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    keys = list(dict.fromkeys((r['attention'], r.get('runtime', 'torch')) for r in result['rows']))
    for name, runtime in keys:
        rows = sorted((r for r in result['rows'] if (r['attention'], r.get('runtime', 'torch')) == (name, runtime)),
                      key=lambda r: r['pixels'])
        px = [r['pixels'] for r in rows]
        label = {FLOOR: 'attention-free floor', PROJ_FLOOR: 'projections-only floor'}.get(name, name)
        label += '' if runtime == 'torch' else f' ({runtime})'
        style = dict(marker='o', linestyle='--' if name in FLOORS else '-', label=label)
        axes[0].plot(px, [r['latency_ms'] for r in rows], **style)
        axes[1].plot(px, [r['cpu_ms'] for r in rows], **style)
        mem = [(r['pixels'], r['peak_mem_mib']) for r in rows if r.get('peak_mem_mib')]
        if mem:
            axes[2].plot(*zip(*mem), **style)
    what = 'training step' if MODE_ALIASES.get(result.get('mode'), result.get('mode')) == 'train' else 'forward'
    for ax, label in zip(axes, (f'{what} latency, wall-clock (ms)', f'{what} CPU time, all threads (ms)',
                                f'peak {what} memory (MiB)')):
        loglog_against_pixels(ax, label)
    axes[0].legend()
    fig.suptitle(f'{result["trunk"]} trunk, batch {result.get("batch", 1)}, {result["device"]} ({result["threads"]} threads), '
                 f'{result["dtype"]}')
    save_figure(fig, path, dpi=120)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--trunk', default='deit-s', help=f'one of {sorted(TRUNKS)}')
    parser.add_argument('--attention', nargs='+',
                        default=[FLOOR, PROJ_FLOOR, 'softmax', 'inline', 'castling', 'armour'],
                        help=f"token mixers to compare; '{FLOOR}': the attention-free floor (identity "
                        f"mixer), '{PROJ_FLOOR}': the q/k/v and output projections without mixing")
    parser.add_argument('--sizes', nargs='+', default=['224', '512', '1024', '800x1280', '2048'],
                        help='input sizes: S (square), HxW, or imagenet/coco/ade20k')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--runtime', nargs='+', default=['torch'], choices=RUNTIMES,
                        help='run every variant in PyTorch and/or as an ONNX graph in onnxruntime (CPU, float32)')
    parser.add_argument('--dtype', default='float32', help='float32, or bfloat16/float16 via autocast')
    parser.add_argument('--mode', default='infer', choices=MODES + tuple(MODE_ALIASES),
                        help="'infer': a forward without autograd; 'train': a training step, forward and "
                        "the backward of the outputs' sum with gradients on the weights")
    parser.add_argument('--batch', type=int, default=1, help='images per pass')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (CPU)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=7, help='timed rounds per size (at most)')
    parser.add_argument('--min-repeats', type=int, default=3,
                        help='rounds always run; more only while the size is within --time-budget')
    parser.add_argument('--time-budget', type=float, default=240,
                        help='seconds of timed rounds per size after which no new round starts')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    parser.add_argument('--no-flops', action='store_true', help='skip FLOP counting')
    parser.add_argument('--out', default=None, help='JSON output path')
    parser.add_argument('--plot', default=None, help='plot output path (png/svg)')
    parser.add_argument('--from-json', nargs='+', default=None,
                        help='measure nothing: merge these result files (same trunk) into one table/JSON/plot')
    parser.add_argument('--_measure', nargs=3, help=argparse.SUPPRESS)
    parser.add_argument('--_count', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.mode = MODE_ALIASES.get(args.mode, args.mode)
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if 'onnxruntime' in args.runtime and (args.device != 'cpu' or args.dtype != 'float32' or args.mode != 'infer'):
        parser.error(f'--runtime onnxruntime runs forward passes on CPU in float32; got --device {args.device} '
                     f'--dtype {args.dtype} --mode {args.mode}')
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f'--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}')
    try:
        for s in args.sizes:
            parse_size(s)
        parse_dtype(args.dtype)
        for name in args.attention:
            check_attention(name)
        if args.trunk not in TRUNKS:
            raise ValueError(f'unknown trunk {args.trunk!r}; expected one of {sorted(TRUNKS)}')
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args._measure:
        trunk, attention, size = args._measure
        torch.set_num_threads(args.threads)
        print(json.dumps(measure_one(trunk, attention, parse_size(size), args.device,
                                     parse_dtype(args.dtype), args._count, args.mode, args.batch)))
        return
    result = merge_results(args.from_json) if args.from_json else run_sweep(args)
    if args.from_json:
        for i, row in enumerate(result['rows']):
            print_row(row, header=i == 0)
    print_summary(result)
    if args.out:
        write_json(args.out, result)
        print(f'results written to {args.out}')
    if args.plot:
        plot(result, args.plot)


if __name__ == '__main__':
    main()
