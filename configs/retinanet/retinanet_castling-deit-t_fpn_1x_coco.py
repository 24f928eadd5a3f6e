# RetinaNet 1x, Castling-DeiT-T (linear-angular attention in every block), warm-started from DeiT-T
# (timm): the Castling twin of retinanet_inline-deit-t_fpn_1x_coco (softmax: retinanet_deit-t_fpn_1x_coco).
_base_ = './retinanet_inline-deit-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.CastlingViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
