# RetinaNet 1x on COCO with an InLine-CSwin-T backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced (CSWin detection recipe: AdamW, lr 1e-4, wd 0.05).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineCSwin',
        arch='t',
        split_sizes=(1, 2, 7, None),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))
