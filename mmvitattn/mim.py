"""Where the configs and tools are, installed or in a checkout, and the command-line entry points.

An installed wheel carries them as ``mmvitattn/.mim/configs`` and ``mmvitattn/.mim/tools`` (the
OpenMMLab layout); a checkout (editable install) has them next to the package. Importing
``mmvitattn`` also tells mmengine that ``mmvitattn::`` names this package, so a config of another
project can inherit ours once the package is imported (as every config of ours does through
``custom_imports``, and as our tools and entry points do before reading a config)::

    _base_ = 'mmvitattn::retinanet/retinanet_inline-pvt-t_fpn_1x_coco.py'

mmengine 0.10.7 resolves ``pkg::`` only for packages in its own table, which this adds to; a
script that reads such a config before importing mmvitattn can use :func:`config_path` instead.
"""
import os
import runpy
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CHECKOUT_DIR = os.path.dirname(PACKAGE_DIR)


def resource_dir(kind: str) -> str:
    """The ``configs`` or ``tools`` folder: inside the installed package, else the checkout's."""
    if kind not in ('configs', 'tools'):
        raise ValueError(f"unknown resource {kind!r}; expected 'configs' or 'tools'")
    installed = os.path.join(PACKAGE_DIR, '.mim', kind)
    if os.path.isdir(installed):
        return installed
    checkout = os.path.join(CHECKOUT_DIR, kind)
    if os.path.isdir(checkout):
        return checkout
    raise FileNotFoundError(f'mmvitattn has no {kind} folder: looked in {installed} and {checkout}')


def config_path(name: str) -> str:
    """Absolute path of a shipped config, e.g. ``config_path('retinanet/retinanet_inline-pvt-t_fpn_1x_coco.py')``."""
    path = os.path.join(resource_dir('configs'), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'mmvitattn ships no config {name!r} (looked for {path})')
    return path


def register_config_scope() -> None:
    """Let mmengine resolve ``mmvitattn::<path>`` base configs (it reads ``.mim/configs/<path>``
    of the installed package)."""
    from mmengine.config import utils
    utils.MODULE2PACKAGE.setdefault('mmvitattn', 'mmvitattn')


def _run_tool(relative: str) -> None:
    path = os.path.join(resource_dir('tools'), relative)
    sys.argv[0] = path
    runpy.run_path(path, run_name='__main__')


def train() -> None:
    """``mmvitattn-train``: tools/train.py."""
    _run_tool('train.py')


def test() -> None:
    """``mmvitattn-test``: tools/test.py."""
    _run_tool('test.py')


def export_onnx() -> None:
    """``mmvitattn-export-onnx``: tools/deployment/export_onnx.py."""
    _run_tool(os.path.join('deployment', 'export_onnx.py'))
