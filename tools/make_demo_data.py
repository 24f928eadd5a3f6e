#!/usr/bin/env python3
"""Generate the small synthetic demo datasets used by the CPU demo.

    python tools/make_demo_data.py {coco,ade,all} --out DIR [--num-train N] [--num-val N]
                                   [--seed S] [--image-size W H]

``coco`` writes DIR/coco (COCO instance segmentation: train2017/, val2017/,
annotations/instances_{train,val}2017.json); ``ade`` writes DIR/ade (ADE20K layout:
images/{training,validation}/*.jpg, annotations/{training,validation}/*.png); ``all``
writes both. ``--out data/demo`` gives the data roots that configs/demo/*.py use.
A dataset that is already complete with the same parameters is left untouched.
Needs only numpy and Pillow.
"""
import argparse
import importlib.util
import os
import sys

# This must work from a source checkout without `pip install`, and without torch:
# Python puts tools/ (not the repository root) on sys.path, and even with the root
# there, `import mmvitattn.datasets.demo_data` would first run mmvitattn/__init__.py,
# which imports torch/mmengine to register the backbones. The generator itself needs
# only numpy and Pillow and has no package-relative imports, so load its file
# directly from this checkout.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEMO_DATA_FILE = os.path.join(REPO_ROOT, 'mmvitattn', 'datasets', 'demo_data.py')


def _load_demo_data():
    spec = importlib.util.spec_from_file_location('_mmvitattn_demo_data', _DEMO_DATA_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_data = _load_demo_data()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate small deterministic demo datasets (COCO / ADE20K formats).')
    parser.add_argument('kind', choices=('coco', 'ade', 'all'),
                        help='which dataset(s) to write')
    parser.add_argument('--out', required=True,
                        help=f'parent directory; datasets go to OUT/{demo_data.COCO_DEMO_DIRNAME} '
                             f'and OUT/{demo_data.ADE_DEMO_DIRNAME}')
    parser.add_argument('--num-train', type=int, default=240,
                        help='training images per dataset (default: 240)')
    parser.add_argument('--num-val', type=int, default=60,
                        help='validation images per dataset (default: 60)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('W', 'H'),
                        default=list(demo_data.DEFAULT_IMAGE_SIZE),
                        help='image width and height (default: %(default)s)')
    return parser.parse_args(argv)


def _describe(name, info):
    params, stats = info['params'], info['stats']
    width, height = params['image_size']
    action = 'wrote' if info['generated'] else 'already complete, kept'
    lines = [f'{name}: {action} {info["root"]} '
             f'({params["num_train"]} train / {params["num_val"]} val images, '
             f'{width}x{height}, seed {params["seed"]})']
    for split in ('train', 'val'):
        counts = stats.get(split, {}).get('instances', {})
        if counts:
            per_class = ', '.join(f'{cls}: {n}' for cls, n in counts.items())
            lines.append(f'  {split} instances: {per_class}')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    jobs = []
    if args.kind in ('coco', 'all'):
        jobs.append(('coco', demo_data.make_coco_demo, demo_data.COCO_DEMO_DIRNAME))
    if args.kind in ('ade', 'all'):
        jobs.append(('ade', demo_data.make_ade_demo, demo_data.ADE_DEMO_DIRNAME))
    for name, make, dirname in jobs:
        try:
            info = make(os.path.join(args.out, dirname), num_train=args.num_train,
                        num_val=args.num_val, image_size=tuple(args.image_size),
                        seed=args.seed)
        except (ValueError, FileExistsError) as err:
            print(f'error: {name}: {err}', file=sys.stderr)
            return 2
        print(_describe(name, info))
    return 0


if __name__ == '__main__':
    sys.exit(main())
