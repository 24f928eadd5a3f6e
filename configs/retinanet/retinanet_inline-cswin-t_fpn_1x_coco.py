# RetinaNet 1x on COCO with an InLine-CSwin-T backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced (CSWin detection recipe: AdamW, lr 1e-4, wd 0.05).
_base_ = '../_base_/retinanet_fpn_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineCSwin',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_cswin_t.pth'),
        arch='t',
        split_sizes=(1, 2, 7, None),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
