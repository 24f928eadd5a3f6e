# Mask R-CNN 1x on COCO with a Castling-PVT-T backbone, trained with Castling-ViT's auxiliary
# masked softmax branch and switched to linear-only attention for the second half of training
# (and for inference). The branch has no parameters: the checkpoints load unchanged into
# `type='mmvitattn.CastlingPVT'` without `attn_cfgs`.
_base_ = './mask-rcnn_inline-pvt-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmvitattn.CastlingPVT',
        # The auxiliary branch builds softmax weights for every query/key pair (chunked over
        # queries, so memory is aux_chunk x N per head, but the cost stays N^2 x heads per block).
        # For a 1280x800 input, stage 1 (stride 4) has 320x200 = 64000 tokens: 64000^2 x heads
        # flops per block even when chunked, hence the branch only in stages 3 and 4 (strides 16
        # and 32), with 80x50 = 4000 and 40x25 = 1000 tokens.
        attn_cfgs=[dict(), dict(), dict(aux_softmax=True, aux_chunk=1024),
                   dict(aux_softmax=True, aux_chunk=1024)]))

# The coefficient on the branch falls from 1 to 0 on a cosine over the first half of training
# (fractions of the total iterations). The mask keeps A_ij > tau / N_real (aux_threshold_mode=
# 'relative', the default; N_real = the image's real keys), so its density is below 1 / tau in both
# stages whatever the image size; tau rises from 1 to 4 meanwhile (density bound 1 -> 0.25; 4 is
# the release's absolute 0.02 at ImageNet's 196 tokens). The release's absolute A_ij > 0.02 would
# mean 20x the mean weight in stage 4 (1000 keys at 1280x800) and 80x in stage 3 (4000 keys), an
# almost empty mask, yet lie below the mean weight on small maps; it changes with the image size. l1_weight > 0 (with tau > 1) also pulls the density down; off here.
# From the end of the span on the model trains exactly as it is evaluated.
custom_hooks = [
    dict(type='mmvitattn.CastlingAuxScheduleHook', begin=0, end=0.5, schedule='cosine', start_coef=1.0,
         threshold=(1.0, 4.0), l1_weight=0.0),
    # the base's hooks (a list replaces the base's list)
    dict(type='mmvitattn.RNGStateHook'),
    dict(type='mmvitattn.FaultToleranceHook'),
]
