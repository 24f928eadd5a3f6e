# mmseg's UperNet R-50 160k ADE20K 512x512 recipe with the transformer-segmentation optimizer that
# every mmvitattn UperNet config shares: AdamW, lr 6e-5, weight decay 0.01, linear warm-up for
# 1500 iterations then poly decay. Family configs replace the backbone and the head input widths.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py', './mmvitattn_runtime.py']

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone (see the
# detection bases).
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskSegDataPreProcessor'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg={{_base_.transformer_paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
