# UperNet 160k, Armour-DeiT-T (W_Q = W_V), warm-started from DeiT-T (timm): the Armour twin of
# upernet_inline-deit-t_4xb4-160k_ade20k-512x512 (softmax: upernet_deit-t_4xb4-160k_ade20k-512x512).
_base_ = './upernet_inline-deit-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.ArmourViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
