# RetinaNet 1x on COCO with an InLine-Swin-T backbone: mmdet's Swin-T RetinaNet layout (the FPN
# takes strides 8-32, no stage-1 output) with the Swin detection optimizer (AdamW, lr 1e-4,
# weight decay 0.05, no decay on relative position tables and norms).
_base_ = '../_base_/retinanet_fpn_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineSwin',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_swin_t.pth'),
        arch='t',
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),  # only what the FPN uses, so every parameter gets a gradient
        out_norm=True),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
