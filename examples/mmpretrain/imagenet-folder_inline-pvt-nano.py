# An mmpretrain image classifier whose backbone comes from mmvitattn, for an ImageNet-style folder
# (data_root/train/<class>/*.jpg, data_root/val/<class>/*.jpg). Run with mmpretrain's own tools:
#   MMPRETRAIN=$(python -c "import mmpretrain, os; print(os.path.dirname(mmpretrain.__file__))")
#   python $MMPRETRAIN/.mim/tools/train.py examples/mmpretrain/imagenet-folder_inline-pvt-nano.py
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['mmvitattn'], allow_failed_imports=False)

data_root = 'data/imagenet-folder/'
num_classes = 3
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=num_classes, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], to_rgb=True),
    backbone=dict(type='mmvitattn.InLinePVT', arch=None, depths=(1, 1, 1, 1), embed_dims=(32, 64, 128, 256),
                  num_heads=(1, 2, 4, 8), out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=256,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()
