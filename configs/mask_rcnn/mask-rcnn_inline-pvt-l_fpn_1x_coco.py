# Mask R-CNN 1x, InLine-PVT-L: the InLine-PVT-T config at another depth.
_base_ = './mask-rcnn_inline-pvt-t_fpn_1x_coco.py'

model = dict(backbone=dict(init_cfg=dict(checkpoint='checkpoints/inline_pvt_l.pth'), arch='l', drop_path_rate=0.3))
