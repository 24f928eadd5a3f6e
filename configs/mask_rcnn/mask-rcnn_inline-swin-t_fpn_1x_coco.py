# Mask R-CNN 1x on COCO with an InLine-Swin-T backbone: mmdet's Swin-T recipe (AdamW, lr 1e-4,
# weight decay 0.05, drop path 0.2, no decay on relative position tables and norms) with the
# backbone replaced. Load the released ImageNet weights with
#   backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='<path>/inline_swin_t.pth'))
# (official or timm layout; buffers dropped, window tables resized on load).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineSwin',
        arch='t',
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    neck=dict(in_channels=[96, 192, 384, 768]))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.0),
        'norm': dict(decay_mult=0.0),
    }))
