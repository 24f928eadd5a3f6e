# UperNet 80k, PVT-T (softmax spatial-reduction attention), cityscapes-512x1024: the softmax baseline of
# upernet_inline-pvt-t_4xb2-80k_cityscapes-512x1024.
_base_ = './upernet_inline-pvt-t_4xb2-80k_cityscapes-512x1024.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
