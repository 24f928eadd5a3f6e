# UperNet 160k on ADE20K at 640 x 640, the large-model setting (as mmseg's ade20k_640x640
# dataset config): images resized to a 2560 x 640 scale (0.5-2.0 random ratio) and cropped to
# 640 x 640 for training, whole-image test at the 2560 x 640 scale. Same optimizer and schedule
# as the 512 x 512 base.
_base_ = './upernet_adamw_160k_ade20k-512x512.py'

crop_size = (640, 640)
scale = (2560, 640)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
