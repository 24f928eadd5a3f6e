# Mask R-CNN 3x multi-scale, Swin-T (shifted-window softmax): the baseline of mask-rcnn_inline-swin-t 3x.
_base_ = './mask-rcnn_inline-swin-t_fpn_ms-3x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxSwin',
                           init_cfg=dict(checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth')))
