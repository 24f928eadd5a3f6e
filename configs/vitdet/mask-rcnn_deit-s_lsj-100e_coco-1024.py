# ViTDet-S: Mask R-CNN with a plain DeiT-S trunk as ViTDet builds it: windowed softmax attention
# (14 x 14 windows, no shift) in every block except blocks 2, 5, 8 and 11, which attend globally;
# no cls token; the simple feature pyramid; ViTDet's LSJ recipe (see the base). The softmax
# twin of mask-rcnn_inline-deit-s_* and mask-rcnn_castling-deit-s_*; global softmax in every
# block is mask-rcnn_deit-s-global_*. From timm's / DeiT's deit_small_patch16_224 weights (the
# window blocks' relative-position tables start at zero).
_base_ = '../_base_/mask-rcnn_vitdet_lsj-100e_coco-1024.py'

win = 'swin_window'  # Swin's window softmax as a token mixer; shift=False, as ViTDet's windows
window = dict(window_size=14)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitattn.SoftmaxViT',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/deit_small_patch16_224.pth'),
        arch='s',
        with_cls_token=False,
        attention=[win, win, 'softmax', win, win, 'softmax', win, win, 'softmax', win, win, 'softmax'],
        attn_cfgs=[window, window, {}, window, window, {}, window, window, {}, window, window, {}],
        drop_path_rate=0.1,
        out_type='simple_pyramid',
        out_channels=[96, 192, 384, 384],
        out_norm=True),
    neck=dict(in_channels=[96, 192, 384, 384]))
