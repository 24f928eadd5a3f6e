# RetinaNet 1x on COCO with an InLine-PVT-T backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced (PVT detection recipe: AdamW, lr 1e-4).
_base_ = '../_base_/retinanet_fpn_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLinePVT',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_pvt_t.pth'),
        arch='t',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    neck=dict(in_channels=[64, 128, 320, 512]))
