# RetinaNet 1x, pvt-t: the softmax baseline of retinanet_inline-pvt-t.
_base_ = './retinanet_inline-pvt-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
