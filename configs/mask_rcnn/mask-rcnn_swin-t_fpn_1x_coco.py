# Mask R-CNN 1x, Swin-T (shifted-window softmax): the softmax baseline of mask-rcnn_inline-swin-t,
# from the official Swin-T ImageNet release.
_base_ = './mask-rcnn_inline-swin-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxSwin', init_cfg=dict(checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth')))
