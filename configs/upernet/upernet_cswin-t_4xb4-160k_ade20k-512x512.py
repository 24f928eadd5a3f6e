# UperNet 160k, cswin-t: the softmax baseline of upernet_inline-cswin-t.
_base_ = './upernet_inline-cswin-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxCSwin', init_cfg=dict(checkpoint='checkpoints/cswin_tiny_224.pth')))
