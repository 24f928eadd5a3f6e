# Mask R-CNN 1x, DeiT-T (global softmax) with the same simple pyramid: the softmax baseline of
# mask-rcnn_inline-deit-t, from timm's deit_tiny_patch16_224 weights.
_base_ = './mask-rcnn_inline-deit-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
