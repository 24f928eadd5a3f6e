# ViTDet-style Mask R-CNN with Castling-ViT attention (linear-angular, global) in every block of a
# DeiT-S trunk (the same widths as ViTDet-S), warm-started from DeiT-S (Castling's depthwise conv
# is new); linear-only training (no auxiliary softmax branch: at 1024 x 1024 every block has 4096
# tokens). Its softmax twin is mask-rcnn_deit-s_* (ViTDet's windows).
_base_ = './mask-rcnn_deit-s_lsj-100e_coco-1024.py'

model = dict(backbone=dict(type='mmvitattn.CastlingViT', attention=None, attn_cfgs=None))
