# UperNet 160k, pvt-t: the softmax baseline of upernet_inline-pvt-t.
_base_ = './upernet_inline-pvt-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
