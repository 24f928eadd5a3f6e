"""Installs mmvitattn. The working stack is pinned in requirements/*.txt; tools/setup_env.sh
installs it in the order that works (see README).

A built wheel also carries ``configs/`` and ``tools/`` as ``mmvitattn/.mim/{configs,tools}``, the
layout OpenMMLab packages use, so configs are found (and inherited) from an installed package."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
MIM_DIRS = ('configs', 'tools')


def read_requirements(*names):
    """Requirement lines of requirements/<name>, following ``-r other.txt`` includes."""
    reqs = []
    for name in names:
        for line in (HERE / 'requirements' / name).read_text().splitlines():
            line = line.split('#')[0].strip()
            if line.startswith('-r '):
                reqs += read_requirements(line[3:].strip())
            elif line:
                reqs.append(line)
    return reqs


class BuildWithMim(build_py):
    """build_py that copies configs/ and tools/ into the built package's ``.mim`` folder, with the
    (empty) model index mmengine reads before it falls back to ``.mim/configs/<path>``. An
    editable install needs none of it: the package finds them in its checkout."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = Path(self.build_lib) / 'mmvitattn' / '.mim'
        for name in MIM_DIRS:
            shutil.copytree(HERE / name, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        (target / 'model-index.yml').write_text('Import: []\n')


setup(
    name='mmvitattn',
    version='0.1.0',
    description='Castling-ViT, InLine and Armour attention backbones for MMDetection and MMSegmentation',
    long_description=(HERE / 'README.md').read_text() if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmvitattn', 'mmvitattn.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('torch.txt', 'mmcv.txt', 'runtime.txt'),
    extras_require={
        'tests': read_requirements('tests.txt'),
        'deploy': read_requirements('deploy.txt'),
        'interop': read_requirements('interop.txt'),
    },
    entry_points={'console_scripts': [
        'mmvitattn-train = mmvitattn.mim:train',
        'mmvitattn-test = mmvitattn.mim:test',
        'mmvitattn-export-onnx = mmvitattn.mim:export_onnx',
    ]},
    cmdclass={'build_py': BuildWithMim},
    zip_safe=False,
)
