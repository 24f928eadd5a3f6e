"""Train a detection or segmentation config with mmengine's Runner.

Same command-line contract as mmdet's and mmseg's tools/train.py; works for both because the
config's ``default_scope`` (mmdet or mmseg) decides which registries the Runner uses.

Exit codes besides 0 / 1 (mmvitattn.FaultToleranceHook): 75 = preempted by SIGTERM / SIGUSR1, the
checkpoint of the last step is saved, continue with --resume; 76 = another rank of the job was lost.
"""
import argparse
import os
import os.path as osp
import sys

# Run from a checkout without installing: the checkout's package wins over an installed one.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvitattn  # noqa: E402,F401  (registers the backbones and the safe checkpoint loader)
from mmvitattn.utils.runtime import AMP_DTYPES, load_config, use_amp  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector or segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument('--amp-dtype', choices=AMP_DTYPES,
                        help='autocast dtype of --amp (default float16); implies --amp')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr with the total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value from the latest one in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs (e.g. train_cfg.max_iters=100)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    cfg = load_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    if args.amp or args.amp_dtype:
        use_amp(cfg, args.amp_dtype or 'float16')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    # Checkpoints must carry torch's random state for --resume to continue exactly, and faults
    # (preemption, crashes, bad data, NaN losses) must be handled; a config whose own
    # custom_hooks list replaced the base's keeps both hooks this way.
    hooks = list(cfg.get('custom_hooks', None) or [])
    for required in ('RNGStateHook', 'FaultToleranceHook'):
        if not any(str(h.get('type', '')).endswith(required) for h in hooks):
            hooks.append(dict(type=f'mmvitattn.{required}'))
    cfg.custom_hooks = hooks
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'checkpoint to resume from not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    runner = Runner.from_cfg(build_config(args))
    runner.train()


if __name__ == '__main__':
    main()
