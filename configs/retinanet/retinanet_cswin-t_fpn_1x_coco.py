# RetinaNet 1x, cswin-t: the softmax baseline of retinanet_inline-cswin-t.
_base_ = './retinanet_inline-cswin-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxCSwin', init_cfg=dict(checkpoint='checkpoints/cswin_tiny_224.pth')))
