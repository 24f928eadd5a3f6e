# UperNet 160k, levit-128s: the softmax baseline of upernet_armour-levit-128s.
_base_ = './upernet_armour-levit-128s_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.LeViT', init_cfg=dict(checkpoint='checkpoints/levit_128s.pth')))
