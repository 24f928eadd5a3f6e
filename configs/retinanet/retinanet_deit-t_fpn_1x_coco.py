# RetinaNet 1x, deit-t: the softmax baseline of retinanet_inline-deit-t.
_base_ = './retinanet_inline-deit-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
