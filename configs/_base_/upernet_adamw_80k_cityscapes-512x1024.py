# mmseg's UperNet R-50 80k Cityscapes recipe (19 classes, 1024 x 2048 images, random 0.5-2.0
# resize and 512 x 1024 crops for training, batch 2 x 4 GPUs) with the transformer segmentation
# optimizer of the ADE20K base (AdamW, lr 6e-5, weight decay 0.01, 1500 warm-up iterations then
# poly decay) and a sliding-window test: 512 x 1024 windows, two thirds overlapping, over the full
# 1024 x 2048 image.
_base_ = ['mmseg::upernet/upernet_r50_4xb2-80k_cityscapes-512x1024.py', './mmvitattn_runtime.py']

model = dict(
    data_preprocessor=dict(type='mmvitattn.PadMaskSegDataPreProcessor'),
    test_cfg=dict(mode='slide', crop_size=(512, 1024), stride=(341, 683)))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg={{_base_.transformer_paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
