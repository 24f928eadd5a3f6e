# ViTDet-style Mask R-CNN with Castling-ViT attention in every block of a DeiT-B trunk (ViTDet-B's
# widths), warm-started from DeiT-B; linear-only training. Its softmax twin is mask-rcnn_deit-b_*.
_base_ = './mask-rcnn_deit-b_lsj-100e_coco-1024.py'

model = dict(backbone=dict(type='mmvitattn.CastlingViT', attention=None, attn_cfgs=None))
