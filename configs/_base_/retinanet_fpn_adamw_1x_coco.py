# mmdet's RetinaNet R-50 FPN 1x recipe with the transformer-detection optimizer that every
# mmvitattn RetinaNet config shares (PVT recipe: AdamW, lr 1e-4, weight decay 1e-4). Family
# configs replace the backbone and the FPN input widths, and adjust the decay where their recipe
# differs.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './mmvitattn_runtime.py']

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone, so an image
# gets the same features whatever it is batched with.
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskDetDataPreprocessor'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg={{_base_.transformer_paramwise_cfg}})
