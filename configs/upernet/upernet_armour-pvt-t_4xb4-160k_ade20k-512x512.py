# UperNet 160k, Armour-PVT-T (global softmax with W_Q = W_V in every stage): the Armour twin of
# upernet_inline-pvt-t_4xb4-160k_ade20k-512x512, warm-started from InLine-PVT-T as mask-rcnn_armour-pvt-t.
# Stage 1 attends over all stride-4 tokens: quadratic memory, see the README.
_base_ = './upernet_inline-pvt-t_4xb4-160k_ade20k-512x512.py'

model = dict(backbone=dict(type='mmvitattn.ArmourPVT', init_cfg=dict(checkpoint='checkpoints/inline_pvt_t.pth')))
