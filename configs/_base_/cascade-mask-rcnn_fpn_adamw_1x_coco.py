# mmdet's Cascade Mask R-CNN R-50 FPN 1x recipe with the Swin detection optimizer (AdamW, lr 1e-4,
# weight decay 0.05, no decay on position / bias tables and norms). Family configs replace the
# backbone and the FPN input widths.
_base_ = ['mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', './mmvitattn_runtime.py']

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone (see the
# README).
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskDetDataPreprocessor'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg={{_base_.transformer_paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
