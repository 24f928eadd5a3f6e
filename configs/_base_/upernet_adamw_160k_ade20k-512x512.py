# mmseg's UperNet R-50 160k ADE20K 512x512 recipe with the transformer-segmentation optimizer that
# every mmvitattn UperNet config shares: AdamW, lr 6e-5, weight decay 0.01, linear warm-up for
# 1500 iterations then poly decay. Family configs replace the backbone and the head input widths.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvitattn', 'mmvitattn.models'], allow_failed_imports=False)

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone (see the
# detection bases).
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskSegDataPreProcessor'))

# Checkpoints carry torch's random state so that --resume continues exactly where the run stopped.
custom_hooks = [dict(type='mmvitattn.RNGStateHook')]

# No weight decay on position embeddings, cls tokens, relative-position / attention biases and
# norms; keys that name no parameter of a backbone are simply unused.
no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_embed': no_decay,
        'cls_token': no_decay,
        'relative_position_bias_table': no_decay,
        'attention_biases': no_decay,
        'norm': no_decay,
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
