# RetinaNet 1x, Armour-PVT-T (global softmax with W_Q = W_V in every stage): the Armour twin of
# retinanet_inline-pvt-t_fpn_1x_coco, warm-started from InLine-PVT-T as mask-rcnn_armour-pvt-t.
# Stage 1 attends over all stride-4 tokens: quadratic memory, see the README.
_base_ = './retinanet_inline-pvt-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.ArmourPVT', init_cfg=dict(checkpoint='checkpoints/inline_pvt_t.pth')))
