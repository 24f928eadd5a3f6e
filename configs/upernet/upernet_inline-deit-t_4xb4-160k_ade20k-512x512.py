# UperNet 160k on ADE20K (512x512) with an InLine-DeiT-T backbone: mmseg's R-50 recipe with the
# backbone and head input widths replaced, and the transformer segmentation optimizer (AdamW,
# lr 6e-5, linear warm-up then poly decay). Blocks 3, 6, 9 and 12 are taken and resized to strides
# 4/8/16/32 (deconvs / identity / max-pool, BEiT/MAE style), each with its own LayerNorm.
# The position embedding trained at 224 is resized to every run-time grid (bicubic, as timm).
_base_ = '../_base_/upernet_adamw_160k_ade20k-512x512.py'

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineViT',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_deit_t.pth'),
        arch='t',
        drop_path_rate=0.1,
        out_type='multi_level',
        out_indices=(2, 5, 8, 11),
        out_channels=192,
        out_norm=True),
    decode_head=dict(in_channels=[192, 192, 192, 192]),
    auxiliary_head=dict(in_channels=192))
