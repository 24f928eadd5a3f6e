# RetinaNet 1x, Armour-DeiT-T (W_Q = W_V), warm-started from DeiT-T (timm): the Armour twin of
# retinanet_inline-deit-t_fpn_1x_coco (softmax: retinanet_deit-t_fpn_1x_coco).
_base_ = './retinanet_inline-deit-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.ArmourViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
