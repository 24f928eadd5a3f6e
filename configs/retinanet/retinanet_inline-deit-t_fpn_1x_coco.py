# RetinaNet 1x on COCO with an InLine-DeiT-T backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced. The ViT's stride-16 map becomes strides 4-32
# through a ViTDet-style simple pyramid; the FPN takes strides 8-32 (as for R-50) and adds P6/P7.
_base_ = '../_base_/retinanet_fpn_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineViT',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_deit_t.pth'),
        arch='t',
        drop_path_rate=0.1,
        out_type='simple_pyramid',
        out_channels=192,
        out_norm=True),
    neck=dict(in_channels=[192, 192, 192, 192]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
