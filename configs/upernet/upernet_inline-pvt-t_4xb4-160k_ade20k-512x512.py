# UperNet 160k on ADE20K (512x512) with an InLine-PVT-T backbone: mmseg's R-50 recipe with the
# backbone and head input widths replaced, and the transformer segmentation optimizer
# (AdamW, lr 6e-5, linear warm-up then poly decay).
_base_ = '../_base_/upernet_adamw_160k_ade20k-512x512.py'

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
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
