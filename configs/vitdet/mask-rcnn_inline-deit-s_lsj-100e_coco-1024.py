# ViTDet-style Mask R-CNN with InLine-DeiT-S (InLine attention, global, in every block; the
# released InLine-DeiT-S widths: 320 wide, 10 heads, trained at 288) and the simple feature
# pyramid, in ViTDet's LSJ recipe. Its softmax twin is mask-rcnn_deit-s_* (ViTDet's windows).
_base_ = './mask-rcnn_deit-s_lsj-100e_coco-1024.py'

model = dict(
    backbone=dict(type='mmvitattn.InLineViT', attention=None, attn_cfgs=None, out_channels=[80, 160, 320, 320],
                  init_cfg=dict(checkpoint='checkpoints/inline_deit_s.pth')),
    neck=dict(in_channels=[80, 160, 320, 320]))
