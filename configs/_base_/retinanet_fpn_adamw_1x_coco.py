# mmdet's RetinaNet R-50 FPN 1x recipe with the transformer-detection optimizer that every
# mmvitattn RetinaNet config shares (PVT recipe: AdamW, lr 1e-4, weight decay 1e-4). Family
# configs replace the backbone and the FPN input widths, and adjust the decay where their recipe
# differs.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvitattn', 'mmvitattn.models'], allow_failed_imports=False)

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone, so an image
# gets the same features whatever it is batched with.
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskDetDataPreprocessor'))

# Checkpoints carry torch's random state so that --resume continues exactly where the run stopped.
custom_hooks = [dict(type='mmvitattn.RNGStateHook')]

# No weight decay on position embeddings, cls tokens, relative-position / attention biases and
# norms; keys that name no parameter of a backbone are simply unused.
no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={
        'pos_embed': no_decay,
        'cls_token': no_decay,
        'relative_position_bias_table': no_decay,
        'attention_biases': no_decay,
        'norm': no_decay,
    }))
