"""Config edits shared by tools/train.py and tools/test.py for detection and segmentation alike."""
import json
import os
from mmengine.config import Config

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}
# Process-group timeout unless the config sets env_cfg.dist_cfg.timeout: long enough for rank 0's
# COCO evaluation while the others wait, short enough that a hung job ends within the hour.
DEFAULT_DIST_TIMEOUT_S = 1800


def config_task(cfg: Config) -> str:
    """'detection' or 'segmentation', from the config's default scope."""
    scope = cfg.get('default_scope', None)
    if scope not in TASKS:
        raise SystemExit(f"config default_scope is {scope!r}; expected one of {sorted(TASKS)} "
                         "(inherit an mmdet or mmseg base config)")
    return TASKS[scope]


def load_config(path: str, launcher: str, cfg_options=None, work_dir=None) -> Config:
    """What tools/train.py and tools/test.py both do: read the config, apply ``--cfg-options``,
    choose the work dir (default ./work_dirs/<config name>), set up the launcher."""
    if not os.path.isfile(path):
        raise SystemExit(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
    set_launcher(cfg, launcher)
    return cfg


def set_launcher(cfg: Config, launcher: str) -> None:
    """Record the launcher. With GPUs, mmengine starts NCCL with one GPU per process (the
    config's SyncBN layers stay synchronised). A torchrun ('pytorch') run without a GPU uses the
    gloo backend: mmengine 0.10.7's init_dist always calls ``torch.cuda.set_device``, so the
    process group is started here (the Runner then finds it), DDP wraps the CPU model without
    device ids, and SyncBN (CUDA only) becomes BN."""
    import datetime

    import torch
    import torch.distributed as dist
    cfg.launcher = launcher
    # A collective that waits longer than this fails instead of hanging (mmengine: seconds).
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg.setdefault('timeout', DEFAULT_DIST_TIMEOUT_S)
    if launcher == 'none':
        return
    if torch.cuda.is_available():
        local_rank, gpus = int(os.environ.get('LOCAL_RANK', 0)), torch.cuda.device_count()
        if local_rank >= gpus:
            raise SystemExit(f'process LOCAL_RANK={local_rank} has no GPU: {gpus} visible; start at most '
                             f'{gpus} processes per node (the GPUS argument of dist_train.sh / dist_test.sh)')
        return
    dist_cfg['backend'] = 'gloo'
    replaced = sync_bn_to_bn(cfg.model)
    if replaced and int(os.environ.get('RANK', 0)) == 0:
        print(f'no GPU: SyncBN (CUDA only) replaced by BN in {replaced} norm_cfg entries for this gloo run',
              flush=True)
    if launcher == 'pytorch':
        if not dist.is_initialized():
            dist.init_process_group(backend='gloo', timeout=datetime.timedelta(seconds=dist_cfg['timeout']))
        wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
        wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper


def sync_bn_to_bn(node) -> int:
    """Replace ``type='SyncBN'`` by ``'BN'`` in every norm config inside a model config; returns
    how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        count += sum(sync_bn_to_bn(value) for value in node)
    return count


AMP_DTYPES = ('float16', 'bfloat16')


def use_amp(cfg: Config, dtype: str = 'float16') -> None:
    """Switch the optimizer wrapper to mixed precision (autocast to ``dtype``, dynamic loss
    scaling); mmengine's AmpOptimWrapper needs a GPU."""
    import torch
    if dtype not in AMP_DTYPES:
        raise SystemExit(f'--amp-dtype must be one of {AMP_DTYPES}, got {dtype!r}')
    if not torch.cuda.is_available():
        raise SystemExit('--amp needs a CUDA device (mmengine AmpOptimWrapper); none is available')
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        raise SystemExit(f'--amp-dtype bfloat16: {torch.cuda.get_device_name()} has no bfloat16 support; '
                         'use float16')
    if cfg.optim_wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    cfg.optim_wrapper.dtype = dtype


def enable_visualization(cfg: Config, task: str, show: bool, show_dir, wait_time: float) -> None:
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise SystemExit('--show/--show-dir need a "visualization" entry in default_hooks')
    hook = hooks['visualization']
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        if task == 'detection':
            hook['test_out_dir'] = show_dir
        else:
            hook['interval'] = 1
            cfg.visualizer['save_dir'] = show_dir


def save_predictions(cfg: Config, task: str, out: str) -> None:
    """``--out``: raw detections to a pickle file, or predicted label maps into a directory."""
    if task == 'detection':
        if not out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out for detection must be a .pkl or .pickle file, got {out!r}')
        dump = dict(type='DumpDetResults', out_file_path=out)
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dump]
    else:
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True


def write_json(path: str, data) -> None:
    """Write JSON atomically: a reader never sees a half-written file."""
    write_text(path, json.dumps(data, indent=2, default=float))


def write_text(path: str, text: str) -> None:
    """Write a text file atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
