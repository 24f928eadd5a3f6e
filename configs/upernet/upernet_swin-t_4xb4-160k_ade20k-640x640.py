# UperNet 160k, Swin-T (shifted-window softmax), ade20k-640x640: the softmax baseline of
# upernet_inline-swin-t_4xb4-160k_ade20k-640x640.
_base_ = './upernet_inline-swin-t_4xb4-160k_ade20k-640x640.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxSwin', init_cfg=dict(checkpoint='checkpoints/swin_tiny_patch4_window7_224.pth')))
