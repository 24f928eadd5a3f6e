"""Castling-ViT's auxiliary branch, with and without: train the demo Mask R-CNN with a nano
Castling-PVT backbone twice from the same seed, once linear-only and once with the auxiliary masked
softmax branch for the first half of training (then off), evaluate both, print a table and write
JSON (``<work-dir>/results.json``).

Each step is the tools/train.py or tools/test.py command a user would type (printed, so any step
can be rerun alone). A run whose metrics file already exists is not repeated, so the two runs can
go in parallel (``--only plain`` / ``--only branch``) and a last call without ``--only`` collects
the table. ``--iters`` shortens both runs (the learning-rate schedule is scaled with it).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

RUNS = {
    'plain': 'configs/demo/mask-rcnn_castling-pvt-nano_fpn_coco-demo.py',
    'branch': 'configs/demo/mask-rcnn_castling-pvt-nano-aux_fpn_coco-demo.py',
}
METRICS = ('coco/bbox_mAP', 'coco/segm_mAP')
DEMO_ITERS, DEMO_WARMUP = 600, 150  # the demo config's schedule, scaled by --iters


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/castling_branch', help='where runs, logs and results go')
    parser.add_argument('--data-root', default=osp.join(REPO, 'data/demo/coco'),
                        help='COCO-format demo data; generated there when absent')
    parser.add_argument('--num-train', type=int, default=240, help='training images when generating the data')
    parser.add_argument('--num-val', type=int, default=60, help='validation images when generating the data')
    parser.add_argument('--iters', type=int, default=DEMO_ITERS, help=f'training iterations (default {DEMO_ITERS})')
    parser.add_argument('--batch-size', type=int, default=None, help='training batch size (default: the config\'s)')
    parser.add_argument('--seed', type=int, default=0, help='the seed of both runs')
    parser.add_argument('--only', choices=sorted(RUNS), help='do one run only (the table needs both)')
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error(f'--iters must be >= 2 (half with the branch, half without), got {args.iters}')
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    return args


def cfg_options(args):
    root = osp.abspath(args.data_root).rstrip('/') + '/'
    iters = args.iters
    warmup = max(1, round(DEMO_WARMUP * iters / DEMO_ITERS))
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    options += [
        f'val_evaluator.ann_file={root}annotations/instances_val2017.json',
        f'test_evaluator.ann_file={root}annotations/instances_val2017.json',
        f'randomness.seed={args.seed}',
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        f'default_hooks.logger.interval={max(1, min(50, iters // 12))}',
        f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={iters}', f'param_scheduler.1.T_max={max(1, iters - warmup)}',
    ]
    if args.batch_size is not None:
        options.append(f'train_dataloader.batch_size={args.batch_size}')
    return options


def run(cmd):
    print('\n$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def castling_log(work_dir):
    """The branch's logged coefficient, threshold and per-stage densities, by 1-based iteration."""
    paths = sorted(p for p in (osp.join(work_dir, d, 'vis_data', 'scalars.json') for d in os.listdir(work_dir))
                   if osp.isfile(p))
    entries = {}
    for path in paths[-1:]:
        with open(path) as f:
            for line in f:
                entry = json.loads(line) if line.strip() else {}
                if 'castling_coef' in entry:
                    entries[entry['iter']] = {k: v for k, v in entry.items() if k.startswith('castling_')}
    return entries


def one_run(name, args, work_root):
    config = RUNS[name]
    work_dir = osp.join(work_root, name)
    metrics_file = osp.join(work_dir, 'test_metrics.json')
    result_file = osp.join(work_dir, 'run.json')
    if osp.isfile(result_file):
        with open(result_file) as f:
            result = json.load(f)
        if result.get('iters') == args.iters and result.get('seed') == args.seed:
            print(f'{name}: reusing {result_file}', flush=True)
            return result
    options = cfg_options(args)
    start = time.time()
    run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *options])
    train_s = time.time() - start
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    start = time.time()
    run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', osp.join(work_dir, 'test'),
         '--metrics-out', metrics_file, '--cfg-options', *options])
    test_s = time.time() - start
    with open(metrics_file) as f:
        metrics = json.load(f)
    result = dict(config=config, checkpoint=checkpoint, iters=args.iters, seed=args.seed, train_s=train_s,
                  test_s=test_s, metrics={m: metrics[m] for m in METRICS}, castling_log=castling_log(work_dir))
    with open(result_file, 'w') as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None):
    args = parse_args(argv)
    from mmvitattn.datasets.demo_data import make_coco_demo
    make_coco_demo(args.data_root, num_train=args.num_train, num_val=args.num_val)
    work_root = osp.abspath(args.work_dir)
    names = [args.only] if args.only else ['plain', 'branch']
    results = {name: one_run(name, args, work_root) for name in names}
    if args.only:
        return results

    print(f'\nCastling-PVT-nano Mask R-CNN on the demo data, {args.iters} iterations, seed {args.seed}')
    print(f'{"run":<8}{"bbox mAP":>10}{"segm mAP":>10}{"train min":>11}')
    for name, res in results.items():
        print(f'{name:<8}{res["metrics"]["coco/bbox_mAP"]:>10.3f}{res["metrics"]["coco/segm_mAP"]:>10.3f}'
              f'{res["train_s"] / 60:>11.1f}')
    delta = {m: results['branch']['metrics'][m] - results['plain']['metrics'][m] for m in METRICS}
    print('branch - plain: ' + ', '.join(f'{m} {d:+.3f}' for m, d in delta.items()))
    summary = dict(iters=args.iters, seed=args.seed, runs=results, branch_minus_plain=delta,
                   branch_reaches_plain=all(d >= 0 for d in delta.values()))
    out = osp.join(work_root, 'results.json')
    with open(out, 'w') as f:
        json.dump(summary, f, indent=2)
    print(f'written {out}')
    return summary


if __name__ == '__main__':
    main()
