"""Installs mmvitattn. The working stack is pinned in requirements/*.txt; tools/setup_env.sh
installs it in the order that works (see README)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(*names):
    reqs = []
    for name in names:
        for line in (HERE / 'requirements' / name).read_text().splitlines():
            line = line.split('#')[0].strip()
            if line:
                reqs.append(line)
    return reqs


setup(
    name='mmvitattn',
    version='0.1.0',
    description='Castling-ViT, InLine and Armour attention backbones for MMDetection and MMSegmentation',
    long_description=(HERE / 'README.md').read_text() if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmvitattn', 'mmvitattn.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('torch.txt', 'mmcv.txt', 'runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    zip_safe=False,
)
