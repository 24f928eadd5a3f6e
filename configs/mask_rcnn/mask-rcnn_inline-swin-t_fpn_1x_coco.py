# Mask R-CNN 1x on COCO with an InLine-Swin-T backbone: mmdet's Swin-T recipe (AdamW, lr 1e-4,
# weight decay 0.05, drop path 0.2, no decay on relative position tables and norms) with the
# backbone replaced. Load the released ImageNet weights with
#   backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='<path>/inline_swin_t.pth'))
# (official or timm layout; buffers dropped, window tables resized on load).
_base_ = '../_base_/mask-rcnn_fpn_adamw_1x_coco.py'

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

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
