# RetinaNet 1x on COCO with an Armour-LeViT-128S backbone: mmdet's R-50 recipe with the backbone,
# the FPN inputs and the optimizer replaced (AdamW, lr 1e-4).
# The FPN takes levels 1-4 (strides 8, 16, 32, 64: the stem's stride-8 map and the three stages)
# and adds P7 (stride 128) with a conv on the last input, as RetinaNet's anchors expect.
_base_ = '../_base_/retinanet_fpn_adamw_1x_coco.py'

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
        out_indices=(1, 2, 3, 4),
        out_norm=True),
    neck=dict(in_channels=[64, 128, 256, 384], start_level=0, add_extra_convs='on_input', num_outs=5))

# LeViT's BN-linears hold their BatchNorm as `.bn`: no weight decay there either.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.bn.': dict(decay_mult=0.0)}))
