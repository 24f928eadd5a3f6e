"""Pieces every backbone family shares: the transformer block, its MLP, patch embedding,
position-embedding resizing, and the mmdet/mmseg backbone options (frozen stages, norm_eval,
gradient checkpointing). Batch padding follows :mod:`mmvitattn.padding`."""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from timm.layers import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..attention import build_attention
from ..padding import PAD_MASK_ATTR, downsample_pad_mask, pad_to_multiple, resolve_pad_mask  # noqa: F401


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, with an optional 3x3 depthwise conv after fc1 (PVTv2 style)."""

    def __init__(self, dim: int, hidden_dim: int, dwconv: bool = False, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim) if dwconv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            b, n, c = x.shape
            h, w = hw
            prefix = n - h * w
            grid = x[:, prefix:]
            if pad_mask is not None:
                # The conv must see zeros beyond an image's border, as when it runs alone.
                grid = grid * ~pad_mask[:, prefix:, None]
            grid = grid.transpose(1, 2).reshape(b, c, h, w)
            x = torch.cat([x[:, :prefix], self.dwconv(grid).flatten(2).transpose(1, 2)], dim=1)
        return self.drop(self.fc2(self.drop(self.act(x))))


class Block(nn.Module):
    """Pre-norm transformer block whose token mixer is any registered attention."""

    def __init__(self, dim: int, num_heads: int, attention: str, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, mlp_dwconv: bool = False, attn_cfg: Optional[dict] = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = build_attention(attention, dim, num_heads, **(attn_cfg or {}))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dwconv=mlp_dwconv)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int],
                pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw, pad_mask))
        return x + self.drop_path(self.mlp(self.norm2(x), hw, pad_mask))


class PatchEmbed(nn.Module):
    """Strided conv + LayerNorm (``norm=False``: conv only, as DeiT). ``overlap=False``: kernel =
    stride (input padded up to a multiple of the stride); ``overlap=True``: kernel 2*stride-1 with
    padding (PVTv2 style)."""

    def __init__(self, in_chans: int, dim: int, stride: int, overlap: bool = False, norm: bool = True):
        super().__init__()
        self.stride = stride
        self.overlap = overlap
        if overlap:
            k = 2 * stride - 1 if stride > 1 else 3
            self.proj = nn.Conv2d(in_chans, dim, k, stride=stride, padding=k // 2)
        else:
            self.proj = nn.Conv2d(in_chans, dim, stride, stride=stride)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """(B, C, H, W) [+ (B, H, W) pixel padding mask] -> tokens (B, N, dim), (h, w), token mask."""
        s = self.stride
        if not self.overlap:
            x, pad_mask = pad_to_multiple(x, pad_mask, s)
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        tokens = self.norm(x.flatten(2).transpose(1, 2))
        return tokens, hw, downsample_pad_mask(pad_mask, hw, s)


def resize_pos_embed_per_image(pos_embed: torch.Tensor, src_hw: Tuple[int, int], hw: Tuple[int, int],
                               sizes: Sequence[Tuple[int, int]], num_prefix: int = 0, **kwargs) -> torch.Tensor:
    """(B, prefix + h*w, C) position embeddings for a padded batch: each image gets the embedding
    resized to its own valid grid (what it gets when run alone), zeros on padded tokens."""
    c = pos_embed.shape[-1]
    out = pos_embed.new_zeros(len(sizes), hw[0], hw[1], c)
    cache = {}
    for i, size in enumerate(sizes):
        if size not in cache:
            cache[size] = resize_pos_embed(pos_embed, src_hw, size, num_prefix, **kwargs)
        grid = cache[size][0, num_prefix:].reshape(size[0], size[1], c)
        out[i, :size[0], :size[1]] = grid
    out = out.reshape(len(sizes), -1, c)
    if num_prefix:
        out = torch.cat([pos_embed[:, :num_prefix].expand(len(sizes), -1, -1), out], dim=1)
    return out


INTERPOLATE_MODES = ('bicubic', 'bilinear', 'nearest')


def check_interpolation(mode: str, antialias: bool) -> None:
    """A position-embedding interpolation rule must be one :func:`resize_pos_embed` knows."""
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f'unknown interpolate_mode {mode!r}; expected one of {INTERPOLATE_MODES}')
    if mode == 'nearest' and antialias:
        raise ValueError("interpolate_antialias=True needs interpolate_mode 'bicubic' or 'bilinear'")


def resize_pos_embed(pos_embed: torch.Tensor, src_hw: Tuple[int, int], dst_hw: Tuple[int, int],
                     num_prefix: int = 0, mode: str = 'bicubic', antialias: bool = True) -> torch.Tensor:
    """Resize the grid part of a (1, prefix + h*w, C) position embedding from ``src_hw`` to
    ``dst_hw``; prefix (cls) entries are kept. Always ``align_corners=False``. The defaults
    (bicubic, antialias on) are timm's, which matters even when upsampling: antialiased bicubic
    uses a different kernel (a = -0.5) from the plain one (a = -0.75). The PVT family passes
    ``mode='bilinear', antialias=False`` (the released PVT / InLine-PVT code)."""
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if src_hw == dst_hw:
        return pos_embed
    if pos_embed.shape[1] != num_prefix + src_hw[0] * src_hw[1]:
        raise ValueError(f'position embedding with {pos_embed.shape[1]} entries does not match '
                         f'{num_prefix} prefix tokens + a {src_hw[0]}x{src_hw[1]} grid')
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    c = grid.shape[-1]
    grid = grid.reshape(1, *src_hw, c).permute(0, 3, 1, 2)
    if grid.dtype not in (torch.float32, torch.float64):
        grid = grid.float()  # half-precision interpolation is not available on every device
    if mode == 'nearest':
        grid = F.interpolate(grid, size=dst_hw, mode=mode)
    else:
        grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False, antialias=antialias)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, -1, c)
    return torch.cat([prefix, grid], dim=1)


def init_transformer_weights(model: nn.Module) -> None:
    """The released models' initialisation: truncated-normal (std 0.02) linears with zero bias,
    unit LayerNorms; other layers keep their own defaults unless a family sets them."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def per_stage(value, num_stages: int, name: str, unit: str = 'stage') -> tuple:
    """Expand a scalar to one value per stage (or ``unit``), or check a sequence has exactly one
    per stage."""
    if isinstance(value, (str, int, float)) or value is None or isinstance(value, dict):
        return (value, ) * num_stages
    value = tuple(value)
    if len(value) != num_stages:
        raise ValueError(f'{name} needs one entry per {unit} ({num_stages}), got {len(value)}: {value!r}')
    return value


def check_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int) -> Tuple[int, ...]:
    out_indices = (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)
    for i in out_indices:
        if not 0 <= i < num_stages:
            raise ValueError(f'out_indices entry {i} is out of range; expected 0..{num_stages - 1}')
    return out_indices


class BackboneBase(BaseModule):
    """The skeleton every family shares: its released sizes (``arch_zoo``, :meth:`resolve_arch`),
    and the mmdet/mmseg backbone conventions: frozen stages stay frozen and in eval mode
    (:meth:`check_frozen_stages`), BN layers optionally stay in eval mode (``norm_eval``), blocks
    optionally recompute in backward (``with_cp``)."""
    arch_zoo: Dict[str, dict] = {}
    family: Optional[str] = None  # the family's name in errors (default: the class name)

    def __init__(self, frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

    def resolve_arch(self, arch: Optional[str], explicit: Dict[str, object],
                     defaults: Optional[dict] = None) -> dict:
        """The sizes of ``arch`` (a key of ``arch_zoo``; None: none) over ``defaults``, overridden by
        the ``explicit`` values that are not None; every key of ``explicit`` must end up set."""
        family = self.family or type(self).__name__
        if arch is None:
            settings = {}
        elif arch in self.arch_zoo:
            settings = self.arch_zoo[arch]
        else:
            raise ValueError(f'unknown {family} arch {arch!r}; expected one of {sorted(self.arch_zoo)} '
                             f'or arch=None with explicit {", ".join(explicit)}')
        out = {**(defaults or {}), **settings, **{k: v for k, v in explicit.items() if v is not None}}
        missing = [k for k in explicit if out.get(k) is None]
        if missing:
            raise ValueError(f'{family} with arch=None needs explicit {", ".join(missing)}')
        return out

    def check_frozen_stages(self, last: int, meaning: str = '') -> None:
        """``frozen_stages`` must be -1 (nothing frozen) .. ``last``; ``meaning`` explains the numbers."""
        value = self.frozen_stages
        if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= last:
            raise ValueError(f'frozen_stages={value!r} is out of range; expected -1..{last}{meaning}')

    def stage_modules(self, index: int):
        """The modules (and bare parameters) that make up stage ``index``; families override."""
        raise NotImplementedError

    def _freeze_stages(self):
        for i in range(self.frozen_stages + 1):
            for item in self.stage_modules(i):
                if isinstance(item, nn.Module):
                    item.eval()
                    for p in item.parameters():
                        p.requires_grad = False
                else:
                    item.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def select_outputs(self, stage_maps) -> tuple:
        """The maps of ``out_indices`` from an iterator over every stage's map; stages after the
        last one asked for are not computed."""
        last = max(self.out_indices)
        outs = []
        for i, feat in enumerate(stage_maps):
            if i in self.out_indices:
                outs.append(feat)
            if i == last:
                break
        return tuple(outs)

    # ------------------------------------------------------------------ pretrained weights
    def init_weights(self):
        """``init_cfg=dict(type='Pretrained', checkpoint=path_or_url[, prefix='backbone.',
        use_ema=False])`` loads through :func:`mmvitattn.checkpoint.load_pretrained` (official,
        timm and our own layouts, resized to this model, reported); other init_cfg types are
        mmengine's."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix'), use_ema=cfg.get('use_ema', False))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint, prefix: Optional[str] = None, use_ema: bool = False):
        """Load a checkpoint (path, URL or dict) into this backbone; returns the
        :class:`~mmvitattn.checkpoint.LoadReport` (also logged)."""
        from ..checkpoint import load_pretrained
        return load_pretrained(self, checkpoint, prefix=prefix, use_ema=use_ema)

    def convert_pretrained_state(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Another codebase's key layout -> ours; families override (ours passes unchanged)."""
        return state

    def resize_pretrained_tensor(self, key: str, tensor: torch.Tensor, shape) -> Optional[torch.Tensor]:
        """``tensor`` trained for another input/window size, resized to ``shape``; None when
        ``key`` is not a size-dependent table. Families override."""
        return None

    def check_head(self) -> None:
        if getattr(self, 'head', None) is None:
            raise RuntimeError(f'this {type(self).__name__} was built with num_classes=0 and has no '
                               'classification head')

    def resolve_pad_mask(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None):
        """Check the images (channels of the first conv) and return the pixel padding mask to use
        (:func:`mmvitattn.padding.resolve_pad_mask`); every family's ``forward`` and
        ``forward_classifier`` start here."""
        stem = next((m for m in self.modules() if isinstance(m, nn.Conv2d)), None)
        return resolve_pad_mask(x, pad_mask, stem.in_channels if stem is not None else None,
                                type(self).__name__)

    def run_block(self, block: nn.Module, x: torch.Tensor, hw, pad_mask):
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(block, x, hw, pad_mask, use_reentrant=False)
        return block(x, hw, pad_mask)
