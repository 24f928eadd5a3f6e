# Semantic FPN 40k on ADE20K with an InLine-PVT-T backbone (the InLine paper's segmentation setup).
_base_ = '../_base_/fpn_adamw_40k_ade20k-512x512.py'

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitattn.InLinePVT',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/inline_pvt_t.pth'),
        arch='t',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        out_norm=True),
    neck=dict(in_channels=[64, 128, 320, 512]))
