# UperNet 80k, Swin-T (shifted-window softmax), cityscapes-512x1024: the softmax baseline of
# upernet_inline-swin-t_4xb2-80k_cityscapes-512x1024.
_base_ = './upernet_inline-swin-t_4xb2-80k_cityscapes-512x1024.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxSwin', init_cfg=dict(checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth')))
