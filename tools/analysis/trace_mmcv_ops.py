"""Which compiled mmcv ops (``mmcv._ext`` functions) each config's training step and prediction run.

    python tools/analysis/trace_mmcv_ops.py                    # every config under configs/
    python tools/analysis/trace_mmcv_ops.py CONFIG ... --out work_dirs/mmcv_ops.json

Each config runs one training step and one prediction on a tiny CPU batch (as the config tests
do; detectors keep their 10 best boxes whatever the score, so that random weights still reach the
post-processing) with every ``mmcv._ext`` call counted. mmdet's ``FocalLoss`` uses mmcv's compiled op only for
CUDA tensors, so it is made to take that branch here, and the fallback ops (``mmvitattn.ops``) are
forced so that branch can run on CPU. Prints the functions per config and their union, and exits
non-zero when one of them has no fallback.
"""
import argparse
import glob
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmvitattn.ops import DEVICE_FREE_EXT, FALLBACK_OPS, forced_fallbacks, record_ext_calls  # noqa: E402
from mmvitattn.testing import (build_model, focal_loss_on_mmcv_op, keep_detections,  # noqa: E402
                               step_setup, train_step_and_predict)
from mmvitattn.utils.runtime import write_json  # noqa: E402


def trace(path: str) -> dict:
    cfg, data, registry = step_setup(path)
    keep_detections(cfg.model)  # else random weights leave nothing for NMS to do
    model = build_model(cfg, registry)
    with forced_fallbacks(), focal_loss_on_mmcv_op(), record_ext_calls() as calls:
        train_step_and_predict(model, cfg, data)
    return dict(sorted(calls.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', help='config files (default: every config under configs/)')
    parser.add_argument('--out', help='JSON output path')
    args = parser.parse_args(argv)
    paths = args.configs or sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                                   if '_base_' not in p.split(os.sep))
    for path in paths:
        if not osp.isfile(path):
            parser.error(f'config file not found: {path}')
    per_config = {}
    for path in paths:
        per_config[osp.relpath(path, ROOT)] = calls = trace(path)
        print(f'{osp.relpath(path, ROOT)}: ' + ', '.join(f'{k} x{v}' for k, v in calls.items()), flush=True)
    used = sorted({name for calls in per_config.values() for name in calls})
    missing = [name for name in used if name not in FALLBACK_OPS and name not in DEVICE_FREE_EXT]
    print(f'\nmmcv._ext functions reached by {len(per_config)} configs: {", ".join(used)}')
    print(f'without a fallback: {", ".join(missing) or "none"}')
    if args.out:
        write_json(args.out, dict(used=used, missing=missing, per_config=per_config))
    sys.exit(1 if missing else 0)


if __name__ == '__main__':
    main()
