# Mask R-CNN 1x on COCO with an InLine-DeiT-T backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced. The plain ViT (one stride-16 map) feeds the FPN
# through a ViTDet-style simple pyramid (2x deconvs / identity / max-pool to strides 4-32, a
# LayerNorm on each level). Pretrained weights: add
# init_cfg=dict(type='Pretrained', checkpoint='<InLine-DeiT-T .pth>') to the backbone.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineViT',
        arch='t',
        drop_path_rate=0.1,
        out_type='simple_pyramid',
        out_channels=192,
        out_norm=True),
    neck=dict(in_channels=[192, 192, 192, 192]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05),
    # No weight decay on position embedding, cls token and norms (DeiT / ViTDet recipes).
    paramwise_cfg=dict(custom_keys={
        'pos_embed': dict(decay_mult=0.0),
        'cls_token': dict(decay_mult=0.0),
        'norm': dict(decay_mult=0.0),
    }))
