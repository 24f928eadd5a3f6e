# Semantic FPN 40k on ADE20K, PVT-T (softmax spatial reduction): the baseline of fpn_inline-pvt-t.
_base_ = './fpn_inline-pvt-t_4xb4-40k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
