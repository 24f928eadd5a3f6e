# Cascade Mask R-CNN 1x on COCO with an InLine-Swin-T backbone.
_base_ = '../_base_/cascade-mask-rcnn_fpn_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineSwin',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_swin_t.pth'),
        arch='t',
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
