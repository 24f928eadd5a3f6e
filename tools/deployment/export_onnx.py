"""Export a backbone, a segmentor (image -> logits) or a detector (image -> raw head outputs) to
ONNX with dynamic height and width, and check the file with onnxruntime against PyTorch.

    python tools/deployment/export_onnx.py CONFIG OUT.onnx [--checkpoint CKPT] [--shape HxW]
        [--part backbone|model] [--check-sizes HxW HxW HxW] [--batch B] [--opset 18]

The graph takes ``images`` (B, 3, H, W), normalised as the model's data preprocessor does and
unpadded (a batch of same-size images). See the README, "Deployment", for running the outputs
through mmdet's post-processing. Exits non-zero, with no file written, if a check fails.
"""
import argparse
import os
import sys

# Run from a checkout without installing: the checkout's package wins over an installed one.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import DictAction  # noqa: E402

from mmvitattn.analysis import parse_size  # noqa: E402


def parse_args(argv=None):
    from mmvitattn.deployment.onnx import DEFAULT_CHECK_SIZES, DEFAULT_SHAPE, OPSET
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='a detection / segmentation config, or one whose model is a backbone')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--checkpoint', help='weights to load (default: random weights, enough to check the graph)')
    parser.add_argument('--part', default='backbone', choices=['backbone', 'model'],
                        help='backbone: image -> feature maps; model: the whole segmentor (image -> logits) '
                        'or detector (image -> raw head outputs, before box decoding and NMS)')
    parser.add_argument('--shape', default='x'.join(map(str, DEFAULT_SHAPE)),
                        help='HxW traced (default: a size that is a multiple of no stride or window, so the '
                        'graph pads as needed and runs at any size)')
    parser.add_argument('--check-sizes', nargs='+', default=['x'.join(map(str, s)) for s in DEFAULT_CHECK_SIZES],
                        help='sizes (HxW, other than --shape) at which onnxruntime is compared with PyTorch')
    parser.add_argument('--batch', type=int, default=1, help='batch size traced')
    parser.add_argument('--opset', type=int, default=OPSET, help='ONNX opset (17 or later)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    args = parser.parse_args(argv)
    try:
        args.shape = parse_size(args.shape)
        args.check_sizes = [parse_size(s) for s in args.check_sizes]
    except ValueError as e:
        parser.error(str(e))
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmvitattn.deployment import ExportCheckError, export_onnx, graph_from_config
    try:
        graph = graph_from_config(args.config, args.part, args.checkpoint, args.cfg_options)
        result = export_onnx(graph, args.out, shape=args.shape, batch=args.batch, check_sizes=args.check_sizes,
                             opset=args.opset)
    except (ValueError, FileNotFoundError, ImportError, ExportCheckError) as e:
        raise SystemExit(f'error: {e}')
    print(result.format())


if __name__ == '__main__':
    main()
