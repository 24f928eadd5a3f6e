# Mask R-CNN 1x, Armour-PVT-T (global softmax with W_Q = W_V in every stage), warm-started from
# InLine-PVT-T: the shared `kv` projection, MLPs and norms load; `q` and InLine's residual are dropped.
# Stage 1 attends over all stride-4 tokens: quadratic memory, see the README.
_base_ = './mask-rcnn_inline-pvt-t_fpn_1x_coco.py'

model = dict(backbone=dict(type='mmvitattn.ArmourPVT', init_cfg=dict(checkpoint='checkpoints/inline_pvt_t.pth')))
