# UperNet 160k, PVT-T (softmax spatial-reduction attention), ade20k-640x640: the softmax baseline of
# upernet_inline-pvt-t_4xb4-160k_ade20k-640x640.
_base_ = './upernet_inline-pvt-t_4xb4-160k_ade20k-640x640.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
