"""The CPU demo, end to end: generate the demo datasets, train a nano InLine-PVT Mask R-CNN and a
nano InLine-PVT UperNet with tools/train.py, evaluate each with tools/test.py, print the metrics.

Each step is the same command a user would type; they are printed so any step can be rerun alone.
Exits non-zero when a model does not reach its target (bbox mAP >= 0.3, mIoU >= 0.5).
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from mmvitattn.datasets.demo_data import make_ade_demo, make_coco_demo  # noqa: E402

JOBS = {
    'det': dict(name='Mask R-CNN, InLine-PVT-nano', config='configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py',
                metrics=('coco/bbox_mAP', 'coco/segm_mAP'), target=('coco/bbox_mAP', 0.3)),
    'seg': dict(name='UperNet, InLine-PVT-nano', config='configs/demo/upernet_inline-pvt-nano_ade20k-demo.py',
                metrics=('mIoU', 'aAcc'), target=('mIoU', 50.0)),
}


def run(cmd):
    print('\n$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def run_job(key, work_root):
    job = JOBS[key]
    work_dir = osp.join(work_root, key)
    start = time.time()
    run([sys.executable, 'tools/train.py', job['config'], '--work-dir', work_dir])
    train_s = time.time() - start
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics_file = osp.join(work_dir, 'test_metrics.json')
    run([sys.executable, 'tools/test.py', job['config'], checkpoint, '--work-dir', osp.join(work_dir, 'test'),
         '--metrics-out', metrics_file])
    with open(metrics_file) as f:
        metrics = json.load(f)
    return dict(job, checkpoint=checkpoint, train_s=train_s, values=metrics)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', choices=sorted(JOBS), help='run only detection or only segmentation')
    parser.add_argument('--work-dir', default='work_dirs/demo', help='where logs and checkpoints go')
    args = parser.parse_args()
    keys = [args.only] if args.only else list(JOBS)
    print('Generating the demo datasets in data/demo (skipped when already complete)', flush=True)
    if 'det' in keys:
        make_coco_demo(osp.join(REPO, 'data/demo/coco'))
    if 'seg' in keys:
        make_ade_demo(osp.join(REPO, 'data/demo/ade'))
    results = [run_job(key, osp.join(REPO, args.work_dir)) for key in keys]

    print('\nDemo results (val split)')
    failed = False
    for res in results:
        metric, target = res['target']
        value = res['values'][metric]
        ok = value >= target
        failed |= not ok
        shown = ', '.join(f'{m} = {res["values"][m]:.3f}' for m in res['metrics'])
        print(f'  {res["name"]}: {shown}  (train {res["train_s"] / 60:.1f} min; target {metric} >= {target}: '
              f'{"reached" if ok else "NOT reached"})')
        print(f'    reproduce: python tools/test.py {res["config"]} {osp.relpath(res["checkpoint"], REPO)}')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
