"""Evaluate a checkpoint of a detection or segmentation config (COCO mAP, mIoU, ...).

Same command-line contract as mmdet's and mmseg's tools/test.py.
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
from mmvitattn.utils.runtime import (config_task, enable_visualization, load_config,  # noqa: E402
                                    save_predictions, write_json)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector or segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', help='detection: a .pkl file for the raw predictions; '
                        'segmentation: a directory for the predicted label maps')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='directory (inside the work dir) where painted images are saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument('--metrics-out', help='also write the evaluation metrics to this JSON file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    cfg.load_from = args.checkpoint
    task = config_task(cfg)
    if args.show or args.show_dir:
        enable_visualization(cfg, task, show=args.show, show_dir=args.show_dir, wait_time=args.wait_time)
    if args.out:
        save_predictions(cfg, task, args.out)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    runner = Runner.from_cfg(build_config(args))
    metrics = runner.test()
    if args.metrics_out and runner.rank == 0:
        write_json(args.metrics_out, metrics)
    return metrics


if __name__ == '__main__':
    main()
