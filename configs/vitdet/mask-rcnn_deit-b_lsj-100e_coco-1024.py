# ViTDet-B: as mask-rcnn_deit-s_* with a DeiT-B trunk (768 wide, 12 heads); windowed softmax with
# global blocks 2, 5, 8, 11, ViTDet's published choice for ViT-B. From deit_base_patch16_224.
_base_ = './mask-rcnn_deit-s_lsj-100e_coco-1024.py'

model = dict(
    backbone=dict(arch='b', out_channels=[192, 384, 768, 768],
                  init_cfg=dict(checkpoint='checkpoints/deit_base_patch16_224.pth')),
    neck=dict(in_channels=[192, 384, 768, 768]))
