"""Convert a pretrained checkpoint (official InLine release, timm, or our own training) into a
checkpoint for one of our backbones, and print what was copied, converted, resized, new or dropped.

    python tools/convert_checkpoint.py SRC OUT --model InLinePVT --arch t
    python tools/convert_checkpoint.py SRC OUT --config configs/mask_rcnn/mask-rcnn_inline-pvt-t_fpn_1x_coco.py

The output holds ``state_dict`` (the backbone's keys that came from the file, no prefix) and
``meta`` (source and report);
point ``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` at it, or load it with mmengine's
``load_checkpoint(backbone, OUT)``. It is written atomically: on any error no output file exists.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

# Which entry of the file each source format keeps its weights in, and under which prefix.
SOURCE_FORMATS = {
    'auto': dict(entry=None, prefix=None),
    'official': dict(entry='model', prefix=None),  # InLine / DeiT / CSwin / LeViT releases
    'timm': dict(entry=None, prefix=None),  # plain state dicts, or timm's training script ('state_dict')
    'mmengine': dict(entry='state_dict', prefix='backbone.'),  # our (and mmdet/mmseg) training output
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint (.pth/.pth.tar/.safetensors, or a URL)')
    parser.add_argument('out', help='output checkpoint file')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--model', help='registered backbone name, e.g. InLinePVT, SoftmaxSwin, ArmourLeViT')
    target.add_argument('--config', help='a detection/segmentation config: its model.backbone is the target')
    parser.add_argument('--arch', help="the backbone's arch (with --model), e.g. t, s, b, 128s")
    parser.add_argument('--model-args', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more backbone arguments (with --model), values as Python literals')
    parser.add_argument('--source-format', choices=sorted(SOURCE_FORMATS), default='auto',
                        help='where the weights sit in the file (auto: detected)')
    parser.add_argument('--prefix', help="keep only keys under this prefix (e.g. 'backbone.')")
    parser.add_argument('--use-ema', action='store_true', help="read the file's EMA weights")
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')
    return parser.parse_args(argv)


def build_backbone(args):
    import ast

    import mmvitattn  # noqa: F401  (registers the backbones)
    from mmvitattn.registry import MODELS
    if args.config:
        from mmengine.config import Config
        cfg = Config.fromfile(args.config).model.backbone
        cfg.pop('init_cfg', None)
        cfg['type'] = cfg['type'].split('.')[-1]
        return MODELS.build(dict(cfg, _scope_='mmvitattn'))  # whatever scope is current
    kwargs = {}
    for item in args.model_args:
        key, sep, value = item.partition('=')
        if not sep:
            raise SystemExit(f'--model-args expects KEY=VALUE, got {item!r}')
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    if args.arch is not None:
        kwargs['arch'] = args.arch
    if args.model not in MODELS.module_dict:
        known = sorted(k for k in MODELS.module_dict)
        raise SystemExit(f'unknown backbone {args.model!r}; expected one of {known}')
    return MODELS.build(dict(type=args.model, _scope_='mmvitattn', **kwargs))


def write_atomically(obj, path: str) -> None:
    """torch.save to a temporary file in the target directory, then rename over ``path``."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', dir=directory)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    args = parse_args(argv)
    if osp.exists(args.out) and not args.overwrite:
        raise SystemExit(f'output {args.out} exists; pass --overwrite to replace it')
    if osp.exists(args.src) and osp.exists(args.out) and osp.samefile(args.src, args.out):
        raise SystemExit(f'output {args.out} is the source file')
    from mmvitattn.checkpoint import load_pretrained
    backbone = build_backbone(args)
    fmt = SOURCE_FORMATS[args.source_format]
    report = load_pretrained(backbone, args.src, prefix=args.prefix or fmt['prefix'], use_ema=args.use_ema,
                             entry=None if args.use_ema else fmt['entry'], logger=None)
    print(report.format(max_names=20))
    meta = dict(source=osp.abspath(args.src) if osp.exists(args.src) else args.src, backbone=type(backbone).__name__,
                entry=report.entry, report=report.format(max_names=1000))
    # Only what came from the file: the backbone's new modules keep their own initialisation.
    own = backbone.state_dict()
    write_atomically({'state_dict': {k: own[k] for k in report.loaded}, 'meta': meta}, args.out)
    print(f'wrote {args.out}')
    return report


if __name__ == '__main__':
    main()
