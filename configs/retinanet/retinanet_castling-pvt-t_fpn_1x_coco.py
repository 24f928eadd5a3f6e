# RetinaNet 1x with a Castling-PVT-T backbone: the Castling twin of retinanet_inline-pvt-t_fpn_1x_coco
# (softmax baseline: retinanet_pvt-t_fpn_1x_coco), trained with Castling-ViT's auxiliary masked
# softmax branch in stages 3-4 for the first half of training, as mask-rcnn_castling-pvt-t_fpn_1x_coco
# (see that config for the choice of stages and the schedule), warm-started from InLine-PVT-T.
_base_ = './retinanet_inline-pvt-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='mmvitattn.CastlingPVT',
        attn_cfgs=[dict(), dict(), dict(aux_softmax=True, aux_chunk=1024),
                   dict(aux_softmax=True, aux_chunk=1024)]))
custom_hooks = [
    dict(type='mmvitattn.CastlingAuxScheduleHook', begin=0, end=0.5, schedule='cosine', start_coef=1.0,
         threshold=(1.0, 4.0), l1_weight=0.0),
    # the base's hooks (a list replaces the base's list)
    dict(type='mmvitattn.RNGStateHook'),
    dict(type='mmvitattn.FaultToleranceHook'),
]
