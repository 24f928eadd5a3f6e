# UperNet 160k on ADE20K (512x512) with an Armour-LeViT-128S backbone: mmseg's R-50 recipe with the
# backbone and head inputs replaced, and the transformer segmentation optimizer
# (AdamW, lr 6e-5, linear warm-up then poly decay).
# The decode head fuses all five LeViT levels (strides 4-64; the pyramid pooling runs on the
# stride-64 stage); the auxiliary FCN head reads stage 2 (stride 32, 256 channels).
_base_ = '../_base_/upernet_adamw_160k_ade20k-512x512.py'

model = dict(
    pretrained=None,
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
    decode_head=dict(in_channels=[32, 64, 128, 256, 384], in_index=[0, 1, 2, 3, 4]),
    auxiliary_head=dict(in_channels=256, in_index=3))

# LeViT's BN-linears hold their BatchNorm as `.bn`: no weight decay there either.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.bn.': dict(decay_mult=0.0)}))
