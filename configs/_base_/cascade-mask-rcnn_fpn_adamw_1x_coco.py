# mmdet's Cascade Mask R-CNN R-50 FPN 1x recipe with the Swin detection optimizer (AdamW, lr 1e-4,
# weight decay 0.05, no decay on position / bias tables and norms). Family configs replace the
# backbone and the FPN input widths.
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitattn', 'mmvitattn.models'], allow_failed_imports=False)

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone (see the
# README), and torch's random state in every checkpoint for an exact --resume.
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskDetDataPreprocessor'))
custom_hooks = [dict(type='mmvitattn.RNGStateHook')]

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'pos_embed': no_decay,
        'cls_token': no_decay,
        'relative_position_bias_table': no_decay,
        'attention_biases': no_decay,
        'norm': no_decay,
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
