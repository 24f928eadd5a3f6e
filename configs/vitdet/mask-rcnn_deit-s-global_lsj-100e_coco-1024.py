# ViTDet-S with global softmax attention in every block (no windows): the quadratic baseline.
_base_ = './mask-rcnn_deit-s_lsj-100e_coco-1024.py'

model = dict(backbone=dict(attention='softmax', attn_cfgs=None))
