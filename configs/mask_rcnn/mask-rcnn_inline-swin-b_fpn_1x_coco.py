# Mask R-CNN 1x, InLine-Swin-B.
_base_ = './mask-rcnn_inline-swin-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(init_cfg=dict(checkpoint='checkpoints/inline_swin_b.pth'), arch='b', drop_path_rate=0.3),
    neck=dict(in_channels=[128, 256, 512, 1024]))
