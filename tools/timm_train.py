"""Run timm's ImageNet training script (``train.py`` of a pytorch-image-models checkout; the pip
package does not ship it) with our classifiers registered, e.g.

    python tools/timm_train.py ~/pytorch-image-models/train.py --data-dir /data/imagenet \
        --model inline_pvt_t --batch-size 128 --lr 1e-3 --weight-decay 0.05 --sched cosine

The ``model_best.pth.tar`` it writes loads straight into a detection/segmentation config
(``init_cfg=dict(type='Pretrained', checkpoint=...)``). Model names: ``mmvitattn.timm_models``.
"""
import os.path as osp
import runpy
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmvitattn  # noqa: E402,F401  (registers the models with timm)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or not argv[0].endswith('.py') or not osp.isfile(argv[0]):
        raise SystemExit("usage: tools/timm_train.py PATH/TO/timm/train.py [train.py arguments]; got "
                         f"{argv[0] if argv else 'nothing'!r}, which is not an existing .py file")
    sys.argv = argv
    runpy.run_path(argv[0], run_name='__main__')


if __name__ == '__main__':
    main()
