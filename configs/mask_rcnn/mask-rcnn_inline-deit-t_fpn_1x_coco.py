# Mask R-CNN 1x on COCO with an InLine-DeiT-T backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced. The plain ViT (one stride-16 map) feeds the FPN
# through a ViTDet-style simple pyramid (2x deconvs / identity / max-pool to strides 4-32, a
# LayerNorm on each level). Pretrained weights: add
# init_cfg=dict(type='Pretrained', checkpoint='<InLine-DeiT-T .pth>') to the backbone.
_base_ = '../_base_/mask-rcnn_fpn_adamw_1x_coco.py'

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
