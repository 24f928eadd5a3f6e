# CPU demo: a nano InLine-PVT UperNet trained from scratch on the generated ADE20K-format demo
# set (tools/make_demo_data.py). Inherits the full-size config and shrinks only the sizes
# (no ImageNet weights exist for the nano trunk: init_cfg=None).
_base_ = '../upernet/upernet_inline-pvt-t_4xb4-160k_ade20k-512x512.py'

data_root = 'data/demo/ade/'
# A prefix of ADE20K's class list keeps label ids unchanged (label 0 = "other" is ignored).
metainfo = dict(classes=('wall', 'building', 'sky', 'floor'),
                palette=[[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50]])
num_classes = 4
max_iters = 1000

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=None, size_divisor=32),
    backbone=dict(embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4),
                  arch=None, depths=(1, 1, 2, 1), drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=num_classes, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, reduce_zero_label=True,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, reduce_zero_label=True,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, begin=100, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
