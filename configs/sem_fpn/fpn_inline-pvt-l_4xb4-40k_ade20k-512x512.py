# Semantic FPN 40k on ADE20K, InLine-PVT-L: the InLine-PVT-T config at another depth.
_base_ = './fpn_inline-pvt-t_4xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(init_cfg=dict(checkpoint='checkpoints/inline_pvt_l.pth'), arch='l', drop_path_rate=0.3))
