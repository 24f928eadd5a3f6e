"""Small members of every backbone family, for tests that run one thing across all of them.
Even head counts everywhere, so CSWin's two stripe halves fit every stage; LeViT's residual
branches do not start at zero, so its mixers take part from the start."""
from mmvitattn.backbones import PVT, CSwin, LeViT, Swin, ViT

# Four blocks / stages each, so one per-stage list fits every family but LeViT (three stages).
FAMILIES = {
    'vit': lambda **kw: ViT(arch=None, embed_dim=32, depth=4, num_heads=2, pretrain_img_size=64,
                            with_cls_token=False, **kw),
    'pvt': lambda **kw: PVT(arch=None, depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(2, 2, 4, 4),
                            mlp_ratios=(2, 2, 2, 2), **kw),
    'swin': lambda **kw: Swin(arch=None, embed_dims=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 8),
                              mlp_ratio=2.0, **kw),
    'cswin': lambda **kw: CSwin(arch=None, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 8),
                                mlp_ratio=2.0, **kw),
    'levit': lambda **kw: LeViT(arch=None, embed_dims=(32, 64, 96), key_dim=16, num_heads=(2, 4, 6),
                                depths=(1, 1, 1), zero_init_residual=False, **kw),
}
FOUR_STAGE = ('vit', 'pvt', 'swin', 'cswin')
