# Mask R-CNN 1x, CSwin-T (cross-shaped window softmax): the softmax baseline of
# mask-rcnn_inline-cswin-t, from the official CSWin-T release (EMA weights when the file has only those).
_base_ = './mask-rcnn_inline-cswin-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.SoftmaxCSwin', init_cfg=dict(checkpoint='checkpoints/cswin_tiny_224.pth')))
