# RetinaNet 1x, swin-t: the softmax baseline of retinanet_inline-swin-t.
_base_ = './retinanet_inline-swin-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxSwin', init_cfg=dict(checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth')))
