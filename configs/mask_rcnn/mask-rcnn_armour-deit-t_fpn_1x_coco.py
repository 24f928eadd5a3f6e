# Mask R-CNN 1x, Armour-DeiT-T (W_Q = W_V), warm-started from DeiT-T (timm): the shared projection
# takes the key and value rows of qkv.
_base_ = './mask-rcnn_inline-deit-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.ArmourViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
