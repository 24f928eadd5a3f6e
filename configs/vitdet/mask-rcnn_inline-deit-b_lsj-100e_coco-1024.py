# ViTDet-style Mask R-CNN with InLine-DeiT-B (InLine attention, global, in every block; the
# released InLine-DeiT-B widths: 384 wide, 12 heads, trained at 448, 23.8M parameters against
# DeiT-B's 86.6M) and the simple feature pyramid. Its softmax twin is mask-rcnn_deit-b_*.
_base_ = './mask-rcnn_deit-b_lsj-100e_coco-1024.py'

model = dict(
    backbone=dict(type='mmvitattn.InLineViT', attention=None, attn_cfgs=None, out_channels=[96, 192, 384, 384],
                  init_cfg=dict(checkpoint='checkpoints/inline_deit_b.pth')),
    neck=dict(in_channels=[96, 192, 384, 384]))
