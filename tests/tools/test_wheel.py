"""A real (non-editable) install: the wheel carries configs and tools under mmvitattn/.mim, another
project's config inherits ours through ``mmvitattn::`` from the installed package, outside any
checkout, and the command-line entry points run."""
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ('setup.py', 'MANIFEST.in', 'README.md', 'requirements', 'mmvitattn', 'configs', 'tools')
RETINANET = 'retinanet/retinanet_inline-pvt-t_fpn_1x_coco.py'


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the sources (the checkout stays clean)."""
    src = tmp_path_factory.mktemp('src')
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(
            REPO / name, src / name, **({'ignore': shutil.ignore_patterns('__pycache__')} if (REPO / name).is_dir() else {}))
    dist = tmp_path_factory.mktemp('dist')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '--no-build-isolation', '-w', str(dist),
                    str(src)], check=True, capture_output=True, text=True, timeout=300)
    (path, ) = dist.glob('mmvitattn-*.whl')
    return path


def test_wheel_carries_configs_tools_and_entry_points(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (REPO / 'configs').rglob('*.py'):
        assert f'mmvitattn/.mim/configs/{config.relative_to(REPO / "configs").as_posix()}' in names
    for tool in ('train.py', 'test.py', 'deployment/export_onnx.py', 'dist_train.sh'):
        assert f'mmvitattn/.mim/tools/{tool}' in names
    assert 'mmvitattn/.mim/model-index.yml' in names
    entry_points = next(n for n in names if n.endswith('.dist-info/entry_points.txt'))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f'mmvitattn-{c} = mmvitattn.mim:' in text for c in ('train', 'test', 'export-onnx'))


def test_installed_wheel_configs_are_found_and_inherited(wheel, tmp_path):
    # A fresh environment that reuses the installed stack (torch, mmcv, mmdet, ...) through a .pth
    # line, without running the stack's own .pth files (so no editable install of a checkout).
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, 'installed_stack.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PIP_FIND_LINKS')}
    subprocess.run([str(python), '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-index', '--ignore-installed',
                    str(wheel)], check=True, capture_output=True, text=True, env=env, timeout=300)
    project = tmp_path / 'other_project'
    project.mkdir()
    (project / 'my_retinanet.py').write_text(textwrap.dedent(f"""\
        _base_ = 'mmvitattn::{RETINANET}'
        model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=3))
        """))
    script = textwrap.dedent("""\
        import mmvitattn
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope
        cfg = Config.fromfile('my_retinanet.py')
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)
        print(mmvitattn.__file__)
        print(mmvitattn.config_path('{config}'))
        print(type(model).__name__, type(model.backbone).__name__, model.bbox_head.num_classes)
        """).format(config=RETINANET)
    proc = subprocess.run([str(python), '-c', script], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    package_file, config_file, built = proc.stdout.strip().splitlines()[-3:]
    assert package_file.startswith(site) and not package_file.startswith(str(REPO))
    assert config_file == os.path.join(site, 'mmvitattn', '.mim', 'configs', RETINANET)
    assert built == 'RetinaNet InLinePVT 3'
    for command in ('mmvitattn-train', 'mmvitattn-export-onnx'):  # (mmvitattn-test is the same mechanism)
        proc = subprocess.run([str(venv / 'bin' / command), '--help'], cwd=project, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0 and 'usage:' in proc.stdout, (command, proc.stderr[-2000:])
