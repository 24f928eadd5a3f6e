# RetinaNet 1x, levit-128s: the softmax baseline of retinanet_armour-levit-128s.
_base_ = './retinanet_armour-levit-128s_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.LeViT', init_cfg=dict(checkpoint='checkpoints/levit_128s.pth')))
