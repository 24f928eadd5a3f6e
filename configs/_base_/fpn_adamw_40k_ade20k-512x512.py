# Semantic FPN on ADE20K (512x512) with the PVT segmentation recipe: mmseg's FPN R-50 setup, AdamW
# (lr 2e-4, weight decay 1e-4), poly decay (power 0.9) over 40k iterations at batch 16 (4 x 4).
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmvitattn', 'mmvitattn.models'], allow_failed_imports=False)

# The stock preprocessor, plus the batch's pixel padding mask handed to the backbone (see the
# README), and torch's random state in every checkpoint for an exact --resume.
model = dict(data_preprocessor=dict(type='mmvitattn.PadMaskSegDataPreProcessor'))
custom_hooks = [dict(type='mmvitattn.RNGStateHook')]

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={
        'pos_embed': no_decay,
        'cls_token': no_decay,
        'relative_position_bias_table': no_decay,
        'attention_biases': no_decay,
        'norm': no_decay,
    }))
max_iters = 40000
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
