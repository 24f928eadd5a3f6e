"""What the benchmark tools share when they report: merging the JSON of several runs, and the
log-log plots against pixels (matplotlib is optional: without it no plot is drawn)."""
import json
import os
import platform
from typing import List, Sequence

from ..utils.runtime import write_text

PIXELS_LABEL = 'input pixels (H x W)'


def merge_runs(paths: Sequence[str]) -> dict:
    """The result files of several runs (e.g. the largest sizes run separately) as one result: the
    first run's settings, every run's rows, and each run's settings (without its rows) in ``runs``."""
    results: List[dict] = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    if not results:
        raise ValueError('no result files to merge')
    merged = dict(results[0])
    merged['rows'] = [row for r in results for row in r['rows']]
    merged['runs'] = [{k: v for k, v in r.items() if k not in ('rows', 'crossovers')} for r in results]
    return merged


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (``platform.processor()`` is empty on Linux, where
    /proc/cpuinfo has it), else the architecture: benchmark figures depend on it, so results say it."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None (after saying so) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot drawn (pip install matplotlib to get one)')
        return None
    return plt


def loglog_against_pixels(ax, ylabel: str) -> None:
    """Log-log axes with pixels on x, the way every benchmark plot here is drawn."""
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel(PIXELS_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, which='both', alpha=0.3)


def save_figure(fig, path: str, dpi: int = 110) -> None:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    print(f'plot written to {path}')


def merge_rows(old: Sequence[dict], new: Sequence[dict], key) -> List[dict]:
    """``old`` rows with each one that a ``new`` row has the same ``key(row)`` as replaced in place,
    then the new rows that replaced none: counting some configs again keeps every other entry."""
    fresh = {key(r): r for r in new}
    out = [fresh.pop(key(r), r) for r in old]
    return out + [r for r in new if key(r) in fresh]


def read_json(path: str, default=None):
    """The JSON at ``path``, or ``default`` when there is no such file."""
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON atomically (a temporary file renamed), so a reader never sees half."""
    write_text(path, json.dumps(obj, indent=1))
