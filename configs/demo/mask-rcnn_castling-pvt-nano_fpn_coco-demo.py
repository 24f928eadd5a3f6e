# CPU demo with Castling-ViT attention: the nano InLine-PVT demo detector with linear-angular
# attention in every stage (linear only: this is also the inference model of the -aux variant).
_base_ = './mask-rcnn_inline-pvt-nano_fpn_coco-demo.py'

model = dict(backbone=dict(type='mmvitattn.CastlingPVT'))
