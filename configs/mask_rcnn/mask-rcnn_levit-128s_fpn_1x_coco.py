# Mask R-CNN 1x, LeViT-128S (softmax): the baseline of mask-rcnn_armour-levit-128s.
_base_ = './mask-rcnn_armour-levit-128s_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.LeViT', init_cfg=dict(checkpoint='checkpoints/levit_128s.pth')))
