# Mask R-CNN 1x, InLine-Swin-S.
_base_ = './mask-rcnn_inline-swin-t_fpn_1x_coco.py'

model = dict(backbone=dict(init_cfg=dict(checkpoint='checkpoints/inline_swin_s.pth'), arch='s', drop_path_rate=0.3))
