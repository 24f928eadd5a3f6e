# The 3x multi-scale recipe of the Swin / PVTv2 detection papers on top of our Mask R-CNN 1x base:
# 36 epochs (lr x0.1 at 27 and 33), shorter side drawn from 480-800 (long side <= 1333), and half
# of the images first resized, cropped and resized again (mmdet's Swin 3x pipeline).
_base_ = './mask-rcnn_fpn_adamw_1x_coco.py'

multi_scale = [(s, 1333) for s in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)],
        [
            dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)], keep_ratio=True),
            dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
            dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True),
        ],
    ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
