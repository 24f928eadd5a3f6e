# Mask R-CNN 3x multi-scale, PVT-T (softmax spatial reduction): the baseline of mask-rcnn_inline-pvt-t 3x.
_base_ = './mask-rcnn_inline-pvt-t_fpn_ms-3x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
