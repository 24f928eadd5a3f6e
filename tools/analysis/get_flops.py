"""FLOPs and parameters of mmdet/mmseg configs or bare backbones, counted with every attention op
included (``mmvitattn.analysis``: SDPA, means, norms and softmax counted by the same rules).

    # Backbone and full model (no post-processing) of configs at COCO's 1280x800:
    python tools/analysis/get_flops.py configs/mask_rcnn/*.py --size coco
    # A bare backbone at several sizes (HxW, height first):
    python tools/analysis/get_flops.py --backbone InLinePVT --backbone-cfg arch=t --size 224 coco ade20k

Sizes: "S" (square), "HxW", or imagenet (224x224), coco (800x1280: 1280 wide, 800 high), ade20k
(512x2048). One FLOP = one multiply-add. ``--products-only`` counts only matrix products and
convolutions (SDPA's two products included), the convention of most papers' tables.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

import mmvitattn  # noqa: E402,F401
from mmvitattn.analysis import backbone_flops, model_flops, parse_size  # noqa: E402
from mmvitattn.analysis.reporting import merge_rows, read_json, write_json  # noqa: E402


def build_from_config(path: str, options=None):
    from mmengine.registry import MODELS, init_default_scope
    if not os.path.isfile(path):
        raise SystemExit(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.model
    # Counting needs no pretrained weights.
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None
    return MODELS.build(model_cfg)


def build_backbone(name: str, options: dict):
    from mmvitattn.registry import MODELS
    cfg = dict(type=name if '.' not in name else name.split('.', 1)[1], _scope_='mmvitattn', **options)
    try:
        return MODELS.build(cfg)
    except KeyError as e:
        raise SystemExit(f'unknown backbone {name!r}: {e}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='mmdet/mmseg config files')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. model.backbone.type=mmvitattn.SoftmaxPVT')
    parser.add_argument('--backbone', help='count a bare registered backbone instead, e.g. InLinePVT')
    parser.add_argument('--backbone-cfg', nargs='+', action=DictAction, default={},
                        help='keyword arguments of --backbone, e.g. arch=t attention=inline')
    parser.add_argument('--size', nargs='+', default=['coco'], help='input sizes (default: coco = 800x1280)')
    parser.add_argument('--proposals', type=int, default=1000,
                        help='RoI-head proposals for two-stage detectors (default 1000, the test-time RPN output)')
    parser.add_argument('--products-only', action='store_true', help='count only products and convolutions')
    parser.add_argument('--by-operator', action='store_true', help='also print the per-operator split')
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args(argv)
    if not args.configs and not args.backbone:
        parser.error('give config files or --backbone NAME')
    try:
        args.sizes = [parse_size(s) for s in args.size]
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    elementwise = not args.products_only
    rows = []
    targets = [(p, lambda p=p: build_from_config(p, args.cfg_options)) for p in args.configs]
    if args.backbone:
        targets.append((args.backbone, lambda: build_backbone(args.backbone, args.backbone_cfg)))
    print(f'{"model":<58} {"size (HxW)":>11} {"params bb":>9} {"GFLOPs bb":>9} {"params":>8} {"GFLOPs":>8}')
    for name, build in targets:
        model = build().eval()
        for size in args.sizes:
            row = dict(model=name, height=size[0], width=size[1], elementwise=elementwise)
            if args.backbone and name == args.backbone:
                bb = backbone_flops(model, size, elementwise=elementwise)
                row.update(backbone=bb.as_dict())
                full = None
            else:
                counts = model_flops(model, size, num_proposals=args.proposals, elementwise=elementwise)
                bb, full = counts['backbone'], counts['model']
                row.update(backbone=bb.as_dict(), model=full.as_dict())
            rows.append(row)
            label = os.path.splitext(os.path.basename(name))[0]
            if args.cfg_options and name in args.configs:
                label += ' ' + ' '.join(f'{k}={v}' for k, v in args.cfg_options.items())
            print(f'{label:<58} {size[0]:>5}x{size[1]:<5} {bb.params / 1e6:>8.2f}M {bb.total / 1e9:>9.2f} '
                  + (f'{full.params / 1e6:>7.2f}M {full.total / 1e9:>8.2f}' if full else f'{"-":>8} {"-":>8}'),
                  flush=True)
            for part, result in (('backbone', bb), ('model', full)):
                if result is None:
                    continue
                if result.unsupported:
                    print(f'    {part}: not counted (no handle): {dict(result.unsupported)}')
                if args.by_operator:
                    ops = ', '.join(f'{k} {v / 1e9:.2f}G' for k, v in
                                    sorted(result.by_operator.items(), key=lambda kv: -kv[1]))
                    print(f'    {part}: {ops}')
        del model
    if args.out:
        # Rows of models (configs) not counted now stay: one file can collect many runs.
        old = read_json(args.out, default={}).get('rows', [])
        rows = merge_rows(old, rows, key=lambda r: (r['model'], r['height'], r['width'], r['elementwise']))
        write_json(args.out, dict(torch=torch.__version__, rows=rows))
        print(f'results written to {args.out} ({len(rows)} rows)')
    return rows


if __name__ == '__main__':
    main()
