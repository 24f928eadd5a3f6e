"""ONNX export that checks itself.

:func:`export_onnx` traces a graph (see ``graphs``) with ``torch.onnx.export`` (the torch.export
based exporter, opset 18) with dynamic height and width, and dynamic batch where the model allows
it, then, before the file appears under its name:

- runs it with onnxruntime at sizes other than the traced one and compares every output with
  PyTorch's (max |onnx - torch| / max(1, max |torch|) <= ``tolerance``);
- lists the graph's values that hold a token x token (N x N) tensor: every intermediate value is
  run at two sizes, and a value with two or more axes that grow with the pixel count is one. For a
  model whose token mixers are all linear (InLine, Castling) there must be none.

The file is written under a temporary name next to ``path`` and renamed only when every check
passed, so a failed export leaves no file behind.

Why the default traced size is odd (227x355): shape-dependent Python branches (pad to a multiple
of the stride or window, or not) are resolved when tracing. At a size that is a multiple of no
stride or window every padding step is traced with its amount as a symbolic expression, which is
0 for sizes that need none, so the graph serves every size.
"""
import contextlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

OPSET = 18
DEFAULT_SHAPE = (227, 355)
DEFAULT_CHECK_SIZES = ((224, 224), (256, 384), (199, 301))
TOLERANCE = 1e-4
LINEAR_ATTENTIONS = ('inline', 'castling')


class ExportCheckError(RuntimeError):
    """The exported graph disagrees with PyTorch, or holds an N x N tensor where it must not."""


def require_onnx():
    """Import onnx and onnxruntime, or say how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(f'ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is not installed): '
                          'pip install -r requirements/deploy.txt') from e
    return onnx, onnxruntime


@dataclass
class SizeCheck:
    batch: int
    height: int
    width: int
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance * max(1.0, self.max_abs_ref)

    def format(self) -> str:
        return (f'  {self.batch} x {self.height}x{self.width}: max |onnx - torch| = {self.max_abs_diff:.2e} '
                f'(outputs up to {self.max_abs_ref:.3g}) -> {"ok" if self.ok else "FAILED"}')


@dataclass
class ExportResult:
    path: str
    traced: Tuple[int, int, int]  # batch, height, width
    output_names: List[str]
    dynamic_batch: bool
    opset: int
    checks: List[SizeCheck] = field(default_factory=list)
    square_values: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    linear_only: bool = False

    def format(self) -> str:
        b, h, w = self.traced
        batch = 'dynamic' if self.dynamic_batch else f'fixed at {b}'
        lines = [f'exported {self.path} (opset {self.opset}; traced at {b} x {h}x{w}; height and width dynamic, '
                 f'batch {batch}); outputs: {", ".join(self.output_names)}',
                 f'onnxruntime vs PyTorch at {len(self.checks)} sizes other than the traced one:']
        lines += [c.format() for c in self.checks]
        if self.square_values:
            names = ', '.join(f'{n} {a}->{b}' for n, a, b in self.square_values[:4])
            lines.append(f'N x N tensors in the graph: {len(self.square_values)} (e.g. {names})')
        else:
            lines.append('N x N tensors in the graph: none' + (' (all token mixers linear)' if self.linear_only else ''))
        return '\n'.join(lines)


def attention_names(model: nn.Module) -> List[str]:
    """The registered names of the token mixers inside ``model`` (in module order)."""
    return [m.attention_name for m in model.modules() if hasattr(m, 'attention_name') and isinstance(m, nn.Module)]


def is_linear_only(model: nn.Module) -> bool:
    names = attention_names(model)
    return bool(names) and all(n in LINEAR_ATTENTIONS for n in names)


def _dynamic_shapes(dynamic_batch: bool):
    from torch.export import Dim
    axes = {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    if dynamic_batch:
        axes[0] = Dim.DYNAMIC
    return {'images': axes}


def _trace(graph: nn.Module, images: torch.Tensor, opset: int, dynamic_batch: bool):
    names = graph.output_names(len(_outputs(graph, images)))
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports each of its steps
        return torch.onnx.export(graph, (images, ), dynamo=True, dynamic_shapes=_dynamic_shapes(dynamic_batch),
                                 opset_version=opset, input_names=['images'], output_names=names, verbose=False)


def _outputs(graph: nn.Module, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = graph(images)
    return (out, ) if isinstance(out, torch.Tensor) else tuple(out)


class AdaptiveAvgPoolAsMatmul(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written as P_h @ x @ P_w^T with bin matrices built from the run-time
    size (bin i covers [floor(i n / o), ceil((i + 1) n / o)), as PyTorch's): the same values, but the
    exported graph computes the bins at run time (torch.export freezes the adaptive pool's bin
    indices at the traced size, e.g. in UperNet's pyramid pooling)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size if isinstance(output_size, tuple) else (output_size, output_size)

    @staticmethod
    def bins(n, o: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(o, device=like.device)
        start, end = (i * n) // o, ((i + 1) * n + o - 1) // o
        idx = torch.arange(n, device=like.device)
        member = ((idx[None] >= start[:, None]) & (idx[None] < end[:, None])).to(like.dtype)
        return member / member.sum(dim=1, keepdim=True)  # (o, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = (n if o is None else o for o, n in zip(self.output_size, x.shape[-2:]))
        return self.bins(x.shape[-2], oh, x) @ x @ self.bins(x.shape[-1], ow, x).transpose(0, 1)


def make_exportable(module: nn.Module) -> nn.Module:
    """Replace (in place) what torch.export cannot keep dynamic by equal modules that it can."""
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, AdaptiveAvgPoolAsMatmul(child.output_size))
        else:
            make_exportable(child)
    return module


def trace_onnx(graph: nn.Module, shape: Tuple[int, int] = DEFAULT_SHAPE, batch: int = 1, opset: int = OPSET,
               dynamic_batch: bool = True):
    """Trace ``graph`` (in eval mode) at ``batch`` x ``shape`` with dynamic height and width;
    returns (the ``torch.onnx.ONNXProgram``, whether its batch is dynamic). With ``dynamic_batch``
    the batch is made dynamic unless the model specialises it (then it is fixed). Adaptive average
    pools in ``graph`` are replaced by :class:`AdaptiveAvgPoolAsMatmul` first."""
    graph = make_exportable(graph).eval()
    if dynamic_batch:
        # Traced with two images or more: torch.export treats a batch of 1 as a constant.
        images = torch.randn(max(batch, 2), 3, *shape, generator=torch.Generator().manual_seed(0))
        try:
            return _trace(graph, images, opset, dynamic_batch=True), True
        except Exception as e:  # the model specialises the batch (e.g. a per-image Python loop)
            if 'shape[0]' not in str(e):
                raise
    images = torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(0))
    return _trace(graph, images, opset, dynamic_batch=False), False


def check_against_torch(graph: nn.Module, session, sizes: Sequence[Tuple[int, int]], batch: int,
                        tolerance: float = TOLERANCE, seed: int = 0) -> List[SizeCheck]:
    """Run the ONNX ``session`` and ``graph`` on the same random images at every size."""
    checks = []
    for h, w in sizes:
        images = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
        refs = _outputs(graph, images)
        try:
            outs = session.run(None, {'images': images.numpy()})
        except Exception as e:  # a shape frozen at trace time can make the graph fail outright
            raise ExportCheckError(f'onnxruntime failed at {batch} x {h}x{w} (traced size works): {e}') from e
        if len(outs) != len(refs) or any(o.shape != tuple(r.shape) for o, r in zip(outs, refs)):
            raise ExportCheckError(f'at {batch} x {h}x{w} the ONNX outputs have shapes {[o.shape for o in outs]}, '
                                   f'PyTorch {[tuple(r.shape) for r in refs]}')
        diff = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, refs))
        ref = max(float(r.abs().max()) for r in refs)
        checks.append(SizeCheck(batch, h, w, diff, ref, tolerance))
    return checks


def onnxruntime_session(model, threads: Optional[int] = None):
    """A CPU onnxruntime session for a model file path or serialised bytes (``threads``: intra-op
    threads, default onnxruntime's)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])


def token_square_values(onnx_path: str, size_a: Tuple[int, int], size_b: Tuple[int, int],
                        batch: int = 1, growth_tolerance: float = 0.15) -> List[Tuple[str, tuple, tuple]]:
    """Values of the graph that hold an N x N tensor: (name, shape at ``size_a``, shape at ``size_b``).

    Every node output is made a graph output and the model is run at both sizes; an axis "grows with
    the pixel count" when its length changes by the ratio of the two sizes' pixel counts (within
    ``growth_tolerance``; the sizes must have a pixel ratio distinct from their height and width
    ratios). A value with two such axes is token x token."""
    onnx, _ = require_onnx()
    model = onnx.load(onnx_path)
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    session = onnxruntime_session(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    shapes = []
    for h, w in (size_a, size_b):
        images = np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)
        shapes.append([np.shape(v) for v in session.run(None, {'images': images})])
    ratio = (size_b[0] * size_b[1]) / (size_a[0] * size_a[1])
    found = []
    for name, a, b in zip(names, *shapes):
        if len(a) != len(b):
            continue
        growing = [i for i, (x, y) in enumerate(zip(a, b)) if x > 1 and abs(y / x / ratio - 1) <= growth_tolerance]
        if len(growing) >= 2:
            found.append((name, tuple(a), tuple(b)))
    return found


def export_onnx(graph: nn.Module, path: str, shape: Tuple[int, int] = DEFAULT_SHAPE, batch: int = 1,
                check_sizes: Sequence[Tuple[int, int]] = DEFAULT_CHECK_SIZES, opset: int = OPSET,
                tolerance: float = TOLERANCE, dynamic_batch: bool = True) -> ExportResult:
    """Export ``graph`` (a module with ``forward(images)`` and ``output_names(n)``) to ``path`` and
    check it (see the module docstring); raises :class:`ExportCheckError` and writes nothing if a
    check fails. ``dynamic_batch=True`` falls back to a fixed batch when the model specialises it
    (e.g. a Python loop over the images)."""
    onnx, _ = require_onnx()
    shape = tuple(int(s) for s in shape)
    check_sizes = [tuple(int(s) for s in size) for size in check_sizes]
    if opset < 17:
        raise ValueError(f'opset {opset} is too old: the export needs opset 17 or later')
    if len(check_sizes) < 2:
        raise ValueError(f'give at least two check sizes (other than the traced {shape}), got {check_sizes}')
    if shape in check_sizes:
        raise ValueError(f'the check sizes {check_sizes} include the traced size {shape}; they must differ')
    program, dynamic_batch = trace_onnx(graph, shape, batch, opset, dynamic_batch)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        session = onnxruntime_session(tmp)
        check_batch = batch + 1 if dynamic_batch else batch
        result = ExportResult(path=path, traced=(batch, *shape), dynamic_batch=dynamic_batch, opset=opset,
                              output_names=[o.name for o in session.get_outputs()],
                              linear_only=is_linear_only(graph))
        result.checks = check_against_torch(graph, session, check_sizes, check_batch, tolerance)
        if not all(c.ok for c in result.checks):
            raise ExportCheckError('the ONNX graph disagrees with PyTorch:\n' + result.format())
        result.square_values = token_square_values(tmp, check_sizes[0], check_sizes[1])
        if result.linear_only and result.square_values:
            raise ExportCheckError('a linear-attention graph holds N x N tensors:\n' + result.format())
        onnx.checker.check_model(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's file is private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return result
