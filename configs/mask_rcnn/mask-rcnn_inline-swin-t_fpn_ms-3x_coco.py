# Mask R-CNN 3x multi-scale on COCO with an InLine-Swin-T backbone: mmdet's Swin-T 3x recipe
# (AdamW, weight decay 0.05, drop path 0.2) with the backbone replaced.
_base_ = '../_base_/mask-rcnn_fpn_adamw_ms-3x_coco.py'

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

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
