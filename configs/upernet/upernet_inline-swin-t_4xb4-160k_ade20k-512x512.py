# UperNet 160k on ADE20K (512x512) with an InLine-Swin-T backbone: mmseg's Swin-T UperNet recipe
# (AdamW, lr 6e-5, weight decay 0.01, drop path 0.3, linear warm-up then poly decay, no decay on
# relative position tables and norms) with the backbone replaced.
_base_ = '../_base_/upernet_adamw_160k_ade20k-512x512.py'

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLineSwin',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_swin_t.pth'),
        arch='t',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
