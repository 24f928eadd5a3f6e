# Mask R-CNN 1x, Castling-DeiT-T (linear-angular attention), warm-started from DeiT-T (timm):
# everything shared loads, Castling's depthwise conv is new.
_base_ = './mask-rcnn_inline-deit-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.CastlingViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
