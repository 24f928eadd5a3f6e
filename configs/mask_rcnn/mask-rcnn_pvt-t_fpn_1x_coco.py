# Mask R-CNN 1x, PVT-T (PVTv1, softmax spatial-reduction attention): the softmax baseline of
# mask-rcnn_inline-pvt-t; the official PVTv1 ImageNet weights (its cls slot is dropped on load).
_base_ = './mask-rcnn_inline-pvt-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxPVT', init_cfg=dict(checkpoint='checkpoints/pvt_tiny.pth')))
