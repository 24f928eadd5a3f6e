# UperNet 160k, deit-t: the softmax baseline of upernet_inline-deit-t.
_base_ = './upernet_inline-deit-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
