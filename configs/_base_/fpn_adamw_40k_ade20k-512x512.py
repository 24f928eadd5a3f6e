# Semantic FPN on ADE20K (512x512) with the PVT segmentation recipe: mmseg's FPN R-50 setup, AdamW
# (lr 2e-4, weight decay 1e-4), poly decay (power 0.9) over 40k iterations at batch 16 (4 x 4).
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py', './mmvitattn_runtime.py']

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone (see the
# README).
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskSegDataPreProcessor'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg={{_base_.transformer_paramwise_cfg}})
max_iters = 40000
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
