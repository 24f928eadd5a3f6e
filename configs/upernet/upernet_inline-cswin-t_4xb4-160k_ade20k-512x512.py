# UperNet 160k on ADE20K (512x512) with an InLine-CSwin-T backbone: mmseg's R-50 recipe with the
# backbone and head input widths replaced, and the transformer segmentation optimizer
# (AdamW, lr 6e-5, linear warm-up then poly decay).
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvitattn'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineCSwin',
        arch='t',
        split_sizes=(1, 2, 7, None),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
