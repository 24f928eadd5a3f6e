# The Castling demo detector trained with the auxiliary masked softmax branch in stages 2-4 for the
# first half of training, then linear-only (as it is evaluated). Same parameters as the plain
# Castling demo config, so its checkpoints load into that config unchanged.
_base_ = './mask-rcnn_castling-pvt-nano_fpn_coco-demo.py'

# Stage 1 (40 x 32 = 1280 tokens at the demo's 160 x 128 input) would dominate the branch's N^2 cost.
model = dict(backbone=dict(attn_cfgs=[dict(), dict(aux_softmax=True), dict(aux_softmax=True),
                                      dict(aux_softmax=True)]))

# Coefficient 1 -> 0 on a cosine over the first half; tau rises from 1 to 4 meanwhile, in units of
# the uniform weight 1/N_real (aux_threshold_mode='relative'), so the mask density stays below
# 1/tau = 1 -> 0.25 in every stage, whatever its size.
# Trained from scratch, this detector's attention is close to uniform: with seed 0 the logged density
# is ~0.5 at tau = 1 but < 0.02 in every stage once tau passes ~1.3 (iteration 30 on), so the branch
# mostly acts in the first iterations (tools/castling_branch_experiment.py logs it per stage).
custom_hooks = [
    dict(type='mmvitattn.CastlingAuxScheduleHook', begin=0, end=0.5, schedule='cosine', start_coef=1.0,
         threshold=(1.0, 4.0), l1_weight=0.0),
    # the base's hooks (a list replaces the base's list)
    dict(type='mmvitattn.RNGStateHook'),
    dict(type='mmvitattn.FaultToleranceHook'),
]
