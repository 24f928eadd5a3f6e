"""The model zoo as a table: every config in configs/ (the CPU demo excluded), its parameters and
FLOPs at its own input size (backbone and whole model, all attention ops counted, see
get_flops.py), and the checkpoint its ``init_cfg`` expects. Prints a Markdown table (the
README's) and writes JSON.

Input size: detection, the fixed size a config pads its images to (its ``image_size``, e.g.
ViTDet's 1024x1024), else COCO's 1280x800; segmentation, the scale of the config's test
``Resize`` (ADE20K 512x2048 or 640x2560, Cityscapes 1024x2048), else ADE20K's 512x2048.

    python tools/analysis/model_zoo.py [--configs configs/mask_rcnn/*.py] [--out work_dirs/zoo.json]

With ``--out``, the rows of configs already in that file and not counted now are kept (the table
lists them all), so a few configs can be (re)counted at a time.
"""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from get_flops import ROOT, build_from_config  # noqa: E402

from mmvitattn.analysis import model_flops  # noqa: E402
from mmvitattn.analysis.reporting import merge_rows, read_json, write_json  # noqa: E402

STANDARD_SIZE = {'mmdet': ('coco', (800, 1280)), 'mmseg': ('ade20k', (512, 2048))}


def zoo_configs():
    paths = glob.glob(os.path.join(ROOT, 'configs', '*', '*.py'))
    return sorted(os.path.relpath(p, ROOT) for p in paths if os.sep + '_base_' + os.sep not in p
                  and os.sep + 'demo' + os.sep not in p)


def describe(path: str) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, path))
    scope = cfg.get('default_scope', 'mmdet')
    if scope not in STANDARD_SIZE:
        raise SystemExit(f'{path}: default_scope {scope!r} is neither mmdet nor mmseg')
    size_name, size = input_size(cfg, scope)
    init_cfg = cfg.model.backbone.get('init_cfg') or {}
    model = build_from_config(os.path.join(ROOT, path)).eval()
    counts = model_flops(model, size)
    return dict(config=path, backbone=cfg.model.backbone.type.split('.')[-1], input=size_name,
                height=size[0], width=size[1], params_backbone=counts['backbone'].params,
                params=counts['model'].params, gflops_backbone=counts['backbone'].total / 1e9,
                gflops=counts['model'].total / 1e9, checkpoint=init_cfg.get('checkpoint', '-'))


def input_size(cfg, scope: str):
    """(name, (height, width)) of the input the config's FLOPs are counted at (module docstring)."""
    if scope == 'mmdet' and cfg.get('image_size'):
        h, w = cfg.image_size
        return f'{h}x{w}', (h, w)
    if scope == 'mmseg':
        pipeline = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.pipeline
        for step in pipeline:
            if step['type'] in ('Resize', 'mmseg.Resize') and step.get('scale'):
                w, h = step['scale']  # mmcv scales are (width, height)
                return f'{h}x{w}', (h, w)
    return STANDARD_SIZE[scope]


def markdown(rows) -> str:
    lines = ['| config | backbone | input (HxW) | params (backbone / all) | GFLOPs (backbone / all) | checkpoint |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| `{os.path.basename(r['config'])[:-3]}` | {r['backbone']} | {r['height']}x{r['width']} | "
                     f"{r['params_backbone'] / 1e6:.1f}M / {r['params'] / 1e6:.1f}M | "
                     f"{r['gflops_backbone']:.1f} / {r['gflops']:.1f} | `{r['checkpoint']}` |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--configs', nargs='+', help='configs to list (default: every one in configs/)')
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args(argv)
    rows = []
    for path in args.configs or zoo_configs():
        rows.append(describe(os.path.relpath(os.path.abspath(path), ROOT)))
        r = rows[-1]
        print(f"{r['config']}: {r['gflops_backbone']:.1f} / {r['gflops']:.1f} GFLOPs", file=sys.stderr, flush=True)
    if args.out:  # the other configs' rows already in the file stay; the table lists them all
        rows = sorted(merge_rows(read_json(args.out, default=[]), rows, key=lambda r: r['config']),
                      key=lambda r: r['config'])
        write_json(args.out, rows)
    print(markdown(rows))
    return rows


if __name__ == '__main__':
    main()
