"""ImageNet classifiers of our backbones, registered with timm.

``import mmvitattn`` makes ``timm.create_model('inline_pvt_t', num_classes=1000)`` (and every name in
:data:`TIMM_MODELS`) build the backbone class itself with its classification head, so a checkpoint
from timm's training script has exactly the backbone's key layout and loads straight into a
detection or segmentation config (``init_cfg=dict(type='Pretrained', checkpoint=...)``; the head
and final norm are reported as dropped). ``tools/timm_train.py`` runs timm's ``train.py`` with
these names registered.

Castling's auxiliary softmax branch works here too: build with
``attn_cfgs=dict(castling=dict(aux_softmax=True))`` (or a per-block list for ViT) and anneal it
with :func:`mmvitattn.engine.set_castling_aux` once per step or epoch; eval mode is linear only.
"""
import inspect
from typing import Dict, Tuple

from torch import nn

from .backbones import (ArmourLeViT, ArmourPlusLeViT, ArmourViT, CastlingPVT, CastlingViT, InLineCSwin, InLinePVT,
                        InLineSwin, InLineViT)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# timm name -> (backbone class, arch, training resolution)
TIMM_MODELS: Dict[str, Tuple[type, str, int]] = {
    **{f'inline_deit_{a}': (InLineViT, a, s) for a, s in (('t', 224), ('s', 288), ('b', 448))},
    **{f'castling_deit_{a}': (CastlingViT, a, 224) for a in 'tsb'},
    **{f'armour_deit_{a}': (ArmourViT, a, 224) for a in 'tsb'},
    **{f'inline_pvt_{a}': (InLinePVT, a, 224) for a in 'tsml'},
    **{f'castling_pvt_{a}': (CastlingPVT, a, 224) for a in 'tsml'},
    **{f'inline_swin_{a}': (InLineSwin, a, 224) for a in 'tsb'},
    **{f'inline_cswin_{a}': (InLineCSwin, a, 224) for a in 'tsb'},
    **{f'armour_levit_{a}': (ArmourLeViT, a, 224) for a in ('128s', '128', '192', '256', '384')},
    **{f'armour_plus_levit_{a}': (ArmourPlusLeViT, a, 224) for a in ('128s', '128', '192', '256', '384')},
}

_classifier_classes: Dict[type, type] = {}


def classifier_class(backbone_cls: type) -> type:
    """``backbone_cls`` whose ``forward`` gives ImageNet logits, with the methods timm's training
    script calls. Same modules, same state-dict keys."""
    if backbone_cls not in _classifier_classes:

        def forward(self, x):
            return self.forward_classifier(x)

        def get_classifier(self) -> nn.Module:
            return self.head

        def no_weight_decay(self):
            """Position embeddings, bias tables and cls tokens, as the released recipes exclude them."""
            keys = ('pos_embed', 'cls_token', 'relative_position_bias_table', 'attention_biases')
            return {name for name, _ in self.named_parameters() if any(k in name for k in keys)}

        _classifier_classes[backbone_cls] = type(f'{backbone_cls.__name__}Classifier', (backbone_cls, ), dict(
            forward=forward, get_classifier=get_classifier, no_weight_decay=no_weight_decay,
            __module__=__name__))
    return _classifier_classes[backbone_cls]


def _timm_kwargs(name: str, cls: type, kwargs: dict) -> dict:
    """Translate the arguments timm's factory passes to ours; refuse ones we cannot honour."""
    kwargs = dict(kwargs)
    kwargs.pop('cache_dir', None)
    if 'in_chans' in kwargs:
        kwargs['in_channels'] = kwargs.pop('in_chans')
    drop_rate = kwargs.pop('drop_rate', 0.0)  # timm's train.py always passes it
    if drop_rate:
        if 'drop_rate' not in inspect.signature(cls).parameters:
            raise ValueError(f'{name}: drop_rate (dropout before the head) is not supported; use drop_path_rate')
        kwargs['drop_rate'] = drop_rate
    pool = kwargs.pop('global_pool', None)
    if pool not in (None, '', 'avg', 'token'):
        raise ValueError(f"{name}: global_pool={pool!r} is not supported; the model's own pooling is used")
    kwargs.setdefault('num_classes', 1000)
    return kwargs


def _make_entrypoint(name: str, cls: type, arch: str, size: int):

    def entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, **kwargs):
        if pretrained:
            raise ValueError(f'no hosted ImageNet weights for {name!r}; download a released checkpoint and '
                             f"pass checkpoint_path=..., or load it with init_cfg=dict(type='Pretrained', ...)")
        model = classifier_class(cls)(arch=arch, **_timm_kwargs(name, cls, kwargs))
        model.pretrained_cfg = model.default_cfg = dict(
            architecture=name, input_size=(3, size, size), interpolation='bicubic', crop_pct=0.9 if size == 224 else 1.0,
            mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=model.num_classes, first_conv='', classifier='head')
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f'{cls.__name__}(arch={arch!r}) with an ImageNet head, trained at {size}x{size}.'
    return entrypoint


def register_with_timm() -> None:
    """Register every name of :data:`TIMM_MODELS` (idempotent)."""
    from timm.models import is_model, register_model
    for name, (cls, arch, size) in TIMM_MODELS.items():
        if not is_model(name):
            entrypoint = _make_entrypoint(name, cls, arch, size)
            globals()[name] = register_model(entrypoint)
