# ViTDet's Mask R-CNN recipe for a plain ViT (Li et al., ECCV 2022; the released detectron2 and
# mmdet ViTDet configs): 1024x1024 large-scale jitter (random resize 0.1-2.0, 1024 crop, flip),
# AdamW (lr 1e-4 at batch 64, weight decay 0.1), layer-wise lr decay 0.7 over the 12 blocks,
# 250 warm-up iterations, 184375 iterations (100 epochs) with steps at 88 and 96 epochs.
# The backbone configs (configs/vitdet/) add the trunk with drop path 0.1 and the simple
# feature pyramid (the backbone's out_type='simple_pyramid': strides 4/8/16/32 from the last
# block, widths d/4, d/2, d, d as ViTDet's), followed by the standard FPN.
# Kept from our Mask R-CNN base: the FPN / RPN / RoI heads without ViTDet's extra norms and convs
# (the comparison is between backbones), and the padding mask: images are padded to 1024 x 1024
# in the batch (not by the pipeline), so padded pixels take no part in the attention.
_base_ = './mask-rcnn_fpn_adamw_1x_coco.py'

image_size = (1024, 1024)
backend_args = None
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, num_workers=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# 100 epochs = 184375 iterations x 64 images / 118k images.
max_iters = 184375
interval = 5000
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval,
                 dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(by_epoch=False, interval=interval, save_last=True, max_keep_ckpts=5))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)

optim_wrapper = dict(
    constructor='mmvitattn.LayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=0.0001, weight_decay=0.1),
    paramwise_cfg=dict(layer_decay_rate=0.7))
