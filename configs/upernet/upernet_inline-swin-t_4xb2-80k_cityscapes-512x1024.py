# UperNet 80k on Cityscapes (512 x 1024 crops, sliding-window test over 1024 x 2048) with an InLine-Swin-T
# backbone: upernet_inline-swin-t_4xb4-160k_ade20k-512x512's backbone (drop path 0.3) and head
# widths in this dataset's recipe (see the base).
_base_ = '../_base_/upernet_adamw_80k_cityscapes-512x1024.py'

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
