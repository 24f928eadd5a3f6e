# UperNet 160k, Castling-DeiT-T (linear-angular attention in every block), warm-started from DeiT-T
# (timm): the Castling twin of upernet_inline-deit-t_4xb4-160k_ade20k-512x512 (softmax: upernet_deit-t_4xb4-160k_ade20k-512x512).
_base_ = './upernet_inline-deit-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.CastlingViT', init_cfg=dict(checkpoint='checkpoints/deit_tiny_patch16_224.pth')))
