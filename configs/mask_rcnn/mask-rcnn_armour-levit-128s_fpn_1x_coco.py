# Mask R-CNN 1x on COCO with an Armour-LeViT-128S backbone: mmdet's R-50 recipe with the backbone,
# the FPN input widths and the optimizer replaced (AdamW, lr 1e-4).
# The FPN takes all five LeViT levels: the stem's stride-4/8 maps (32/64 channels) and the three
# stages (strides 16/32/64), so P2-P6 match the RPN's anchor strides without an extra max-pool.
# Plain LeViT-128S: type='mmvitattn.LeViT' (its ImageNet weights load with
# init_cfg=dict(type='Pretrained', checkpoint=...), timm or official layout).
_base_ = '../_base_/mask-rcnn_fpn_adamw_1x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.ArmourLeViT',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/levit_128s.pth'),
        arch='128s',
        drop_path_rate=0.0,  # LeViT-128S is trained without stochastic depth
        # No Armour ImageNet weights exist, so this may train from scratch: start the residual
        # branches at BN scale 1 (not LeViT's 0) so every layer learns from the first step.
        # Irrelevant when init_cfg loads ImageNet weights.
        zero_init_residual=False,
        out_indices=(0, 1, 2, 3, 4),
        out_norm=True),
    neck=dict(in_channels=[32, 64, 128, 256, 384], num_outs=5))

# LeViT's BN-linears hold their BatchNorm as `.bn`: no weight decay there either.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.bn.': dict(decay_mult=0.0)}))
