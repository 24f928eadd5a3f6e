# ViTDet-B with global softmax attention in every block (no windows): the quadratic baseline.
_base_ = './mask-rcnn_deit-b_lsj-100e_coco-1024.py'

model = dict(backbone=dict(attention='softmax', attn_cfgs=None))
