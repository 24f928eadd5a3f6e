"""One grammar, in every family, for which token mixer each block runs and with which options.

``attention``:

- one name for every block: ``attention='inline'``;
- one entry per stage (per block for the plain ViT, whose blocks are its stages): each a name for
  the whole stage, a sequence of one name per block, or ``(name, n)``: the first ``n`` blocks
  ``name``, the rest the family's second mixer (Swin only: shifted windows), as in InLine-Swin-B's
  ``attention=('I', 'I', ('I', 2), 'S')``; PVT's ``attention=('sra', 'sra', 'inline', 'inline')``;
- letters as sugar for names: ``I`` inline, ``S`` swin_window, ``C`` castling, ``A`` armour, and a
  string of one letter per stage: ``attention='IIIS'`` is ``attention=('I', 'I', 'I', 'S')``.

``attn_cfgs`` (options for the mixers' constructors):

- one dict for every block. Its keys are options, or registered attention names (and letters)
  whose dict goes to the blocks of that mixer only: ``attn_cfgs=dict(aux_softmax=True)`` and
  ``attn_cfgs=dict(castling=dict(aux_softmax=True))`` both switch on Castling's auxiliary branch.
  An option reaches every block whose mixer takes it; an option that no mixer in its scope takes,
  or a section for a mixer no block in scope runs, is an error naming it;
- or one entry per stage (per block for the ViT): each a dict as above for the whole stage, or a
  sequence of one dict per block, e.g. ``attn_cfgs=[{}, {}, dict(aux_softmax=True), dict(sr_ratio=2)]``.
"""
import inspect
from typing import Callable, Dict, Optional, Sequence, Tuple

from ..attention import ATTENTIONS

LETTERS = {'I': 'inline', 'S': 'swin_window', 'C': 'castling', 'A': 'armour'}
ALIASES = {'window': 'swin_window'}

Names = Tuple[Tuple[str, ...], ...]


def attention_name(value, known: Sequence[str], label: str = 'attention type') -> str:
    """A registered (or family-native) name for ``value``, a name, alias or letter."""
    if isinstance(value, str):
        value = LETTERS.get(value, ALIASES.get(value, value))
        if value in known:
            return value
    raise ValueError(f'unknown {label} {value!r}; expected one of {sorted(known)} or a letter of '
                     f'{sorted(LETTERS)} ({", ".join(f"{k}={v}" for k, v in LETTERS.items())})')


def _is_count_entry(entry) -> bool:
    return (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)
            and isinstance(entry[1], int) and not isinstance(entry[1], bool))


def resolve_attention(spec, depths: Sequence[int], known: Sequence[str], unit: str = 'stage',
                      fill: Optional[str] = None, owner: str = 'this model',
                      label: str = 'attention type') -> Names:
    """Expand ``spec`` (see the module docstring) to one name per block, per stage. ``known``: the
    names this family can build; ``fill``: the family's second mixer for ``(name, n)`` entries;
    ``owner`` names the model in errors, ``label`` what an unknown name is called."""
    num_stages = len(depths)
    if spec is None:
        raise ValueError(f'{owner} needs attention=<name> or one name per {unit}; expected names from '
                         f'{sorted(known)}')
    if isinstance(spec, str) and spec not in LETTERS and len(spec) == num_stages > 1 \
            and all(ch in LETTERS for ch in spec):
        spec = tuple(spec)  # 'IIIS'
    if isinstance(spec, str):
        return tuple((attention_name(spec, known, label), ) * d for d in depths)
    spec = tuple(spec)
    if len(spec) != num_stages:
        raise ValueError(f'attention needs one entry per {unit} ({num_stages}), got {len(spec)}: {spec!r}')
    stages = []
    for i, (entry, depth) in enumerate(zip(spec, depths)):
        if isinstance(entry, str):
            stages.append((attention_name(entry, known, label), ) * depth)
        elif _is_count_entry(entry):
            name, count = attention_name(entry[0], known, label), entry[1]
            if fill is None:
                raise ValueError(f'attention entry {tuple(entry)!r} of {unit} {i}: (name, count) needs a family '
                                 'with a second mixer for the other blocks (Swin); give one name per block')
            if not 0 <= count <= depth:
                raise ValueError(f'attention entry {tuple(entry)!r} of {unit} {i} asks for {count} blocks; '
                                 f'the {unit} has {depth}')
            stages.append((name, ) * count + (fill, ) * (depth - count))
        elif isinstance(entry, (list, tuple)) and all(isinstance(e, str) for e in entry):
            if len(entry) != depth:
                raise ValueError(f'attention entry of {unit} {i} names {len(entry)} blocks; the {unit} '
                                 f'has depth {depth}: {entry!r}')
            stages.append(tuple(attention_name(e, known, label) for e in entry))
        else:
            raise ValueError(f'attention entry of {unit} {i} must be a name, (name, count) or one name '
                             f'per block, got {entry!r}')
    return tuple(stages)


def stage_summary(names: Names) -> tuple:
    """Per stage its one name, or its names per block where they differ (``model.attention``)."""
    return tuple(stage[0] if len(set(stage)) == 1 else stage for stage in names)


def constructor_options(name: str) -> Optional[frozenset]:
    """The keyword options the mixer registered as ``name`` takes (None: it takes any)."""
    params = inspect.signature(ATTENTIONS[name].__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.name not in ('self', 'dim', 'num_heads'))


def _takes(options: Callable[[str], Optional[frozenset]], name: str, key: str) -> bool:
    accepted = options(name)
    return accepted is None or key in accepted


def _scope_cfgs(cfg, names: Sequence[str], known: Sequence[str], where: str,
                options: Callable[[str], Optional[frozenset]]) -> Tuple[dict, ...]:
    """One dict (see the module docstring) applied to the blocks running ``names``."""
    if cfg is None:
        return tuple({} for _ in names)
    if not isinstance(cfg, dict):
        raise ValueError(f'attn_cfgs entry for {where} must be a dict (or None), got {cfg!r}')
    shared, sections = {}, {}
    for key, value in cfg.items():
        resolved = LETTERS.get(key, ALIASES.get(key, key))
        if resolved in known and isinstance(value, dict):
            if resolved not in names:
                raise ValueError(f'attn_cfgs has an entry for {key!r}, which no block uses; '
                                 f'the blocks use {sorted(set(names))}')
            sections[resolved] = {**sections.get(resolved, {}), **value}
        else:
            shared[key] = value
    used = list(dict.fromkeys(names))
    unknown = sorted(k for k in shared if not any(_takes(options, n, k) for n in used))
    for name, section in sections.items():
        bad = sorted(k for k in section if not _takes(options, name, k))
        if bad:
            raise ValueError(f'unknown options {bad} for {name!r} attention in attn_cfgs ({where}); '
                             f'it takes {sorted(options(name) or ())}')
    if unknown:
        takes = {n: sorted(options(n) or ()) for n in used}
        raise ValueError(f'unknown options {unknown} for {", ".join(map(repr, used))} attention in attn_cfgs '
                         f'({where}); the mixers there take {takes}')
    return tuple({**{k: v for k, v in shared.items() if _takes(options, n, k)}, **sections.get(n, {})}
                 for n in names)


def resolve_attn_cfgs(cfgs, names: Names, known: Sequence[str], unit: str = 'stage',
                      options: Callable[[str], Optional[frozenset]] = constructor_options
                      ) -> Tuple[Tuple[dict, ...], ...]:
    """Expand ``attn_cfgs`` (see the module docstring) to one options dict per block, per stage,
    for the blocks' mixers ``names`` (from :func:`resolve_attention`)."""
    flat = tuple(n for stage in names for n in stage)
    if cfgs is None or isinstance(cfgs, dict):
        per_block = iter(_scope_cfgs(cfgs, flat, known, f'every {unit}', options))
        return tuple(tuple(next(per_block) for _ in stage) for stage in names)
    cfgs = tuple(cfgs)
    if len(cfgs) != len(names):
        raise ValueError(f'attn_cfgs needs one entry per {unit} ({len(names)}), got {len(cfgs)}: {cfgs!r}')
    out = []
    for i, (entry, stage) in enumerate(zip(cfgs, names)):
        if entry is None or isinstance(entry, dict):
            out.append(_scope_cfgs(entry, stage, known, f'{unit} {i}', options))
            continue
        entry = tuple(entry)
        if len(entry) != len(stage):
            raise ValueError(f'attn_cfgs entry of {unit} {i} has {len(entry)} dicts; the {unit} has '
                             f'{len(stage)} blocks')
        out.append(tuple(_scope_cfgs(e, (n, ), known, f'{unit} {i} block {j}', options)[0]
                         for j, (e, n) in enumerate(zip(entry, stage))))
    return tuple(out)


def mixer_options(name: str, defaults: Dict, cfg: Dict,
                  options: Callable[[str], Optional[frozenset]] = constructor_options) -> dict:
    """A block's constructor options: the family's ``defaults`` that its mixer takes, then the
    user's ``cfg`` (already checked by :func:`resolve_attn_cfgs`)."""
    return {**{k: v for k, v in defaults.items() if _takes(options, name, k)}, **cfg}
