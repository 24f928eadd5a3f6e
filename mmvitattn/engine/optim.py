"""Layer-wise learning-rate decay for plain-ViT detectors and segmentors (as ViTDet fine-tunes).

Block ``i`` of a ``depth``-block ViT trains at ``lr * rate ** (depth - i)``; the patch embedding,
position embedding and cls token at ``lr * rate ** (depth + 1)``; everything outside the trunk
(pyramid, neck, heads) at ``lr``. The decay multiplies whatever the usual ``paramwise_cfg``
(``custom_keys``, ``norm_decay_mult``, ...) already set, so no-weight-decay rules keep working.
"""
import re
from typing import List, Optional

from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS

EMBEDDING_KEYS = ('patch_embed', 'pos_embed', 'cls_token')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``optim_wrapper=dict(constructor='mmvitattn.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7, ...))``; ``num_layers`` defaults to the backbone's
    ``depth``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.decay_rate = paramwise_cfg.pop('layer_decay_rate', None)
        self.num_layers = paramwise_cfg.pop('num_layers', None)
        if not isinstance(self.decay_rate, (int, float)) or not 0 < self.decay_rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate must be a number in (0, 1], got {self.decay_rate!r}')
        # Non-empty, so the parent builds one group per parameter (which we then scale).
        paramwise_cfg.setdefault('custom_keys', {})
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def layer_id(self, name: str) -> int:
        """0 for the embeddings, i + 1 for block i, num_layers + 1 outside the trunk."""
        name = name[len('backbone.'):] if name.startswith('backbone.') else None
        if name is None:
            return self.num_layers + 1
        if name.startswith(EMBEDDING_KEYS):
            return 0
        block = re.match(r'blocks\.(\d+)\.', name)
        return int(block.group(1)) + 1 if block else self.num_layers + 1

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '', **kwargs) -> None:
        super().add_params(params, module, prefix=prefix, **kwargs)
        if prefix:  # the parent recurses through submodules; scale once, at the top
            return
        if self.num_layers is None:
            depth = getattr(getattr(module, 'backbone', None), 'depth', None)
            if not isinstance(depth, int):
                raise ValueError('layer decay needs paramwise_cfg.num_layers (the model has no backbone.depth)')
            self.num_layers = depth
        names = {id(p): n for n, p in module.named_parameters()}
        for group in params:
            scale = self.decay_rate**(self.num_layers + 1 - self.layer_id(names[id(group['params'][0])]))
            group['lr'] = group.get('lr', self.base_lr) * scale
