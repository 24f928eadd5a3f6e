"""Bad input gets a clear error, raised early, naming the bad value and what was expected:
backbone / config arguments, images that do not fit the backbone, and datasets whose annotation
file does not match its images. Checkpoint-file errors are tested with the checkpoint loader."""
import json
import shutil

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS

import mmvitattn  # noqa: F401
from mmvitattn.backbones import PVT, CSwin, LeViT, Swin, ViT
from mmvitattn.datasets.checks import DatasetMismatchError, check_coco_dataset
from mmvitattn.datasets.demo_data import make_coco_demo

VIT = dict(arch=None, embed_dim=32, depth=2, num_heads=2)
PVT_TINY = dict(arch=None, depths=(1, 1, 1, 1), embed_dims=(16, 16, 32, 32), num_heads=(2, 2, 2, 2))
SWIN_TINY = dict(arch=None, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))
LEVIT_TINY = dict(arch=None, embed_dims=(32, 48, 64), key_dim=8, num_heads=(2, 3, 4), depths=(1, 1, 1))

BAD_ARGUMENTS = {
    # unknown attention names
    'vit-attention': (lambda: ViT(**VIT, attention='nope'), r"unknown attention type 'nope'; expected one of \["),
    'pvt-attention': (lambda: PVT(attention='nope'), r"unknown attention type 'nope'; expected one of"),
    'swin-attention': (lambda: Swin(attention='Q'), r"unknown attention 'Q'; expected one of .* or a letter of"),
    'cswin-attention': (lambda: CSwin(attention='nope'), r"unknown attention type 'nope'"),
    'levit-attention': (lambda: LeViT(attention='nope'), r"unknown LeViT attention 'nope'; expected one of"),
    # head counts that do not divide the widths
    'vit-heads': (lambda: ViT(**{**VIT, 'num_heads': 3}, attention='inline'),
                  r'num_heads=3 does not divide the embedding width 32'),
    'pvt-heads': (lambda: PVT(attention='inline', num_heads=(3, 4, 10, 16)),
                  r'num_heads=3 does not divide the embedding width 64'),
    'swin-heads': (lambda: Swin(attention='I', num_heads=(5, 6, 12, 24)),
                   r'num_heads=5 does not divide the embedding width 96'),
    'cswin-heads': (lambda: CSwin(attention='inline', num_heads=(3, 4, 8, 16)),
                    r'num_heads=3 does not divide the embedding width 64'),
    'levit-key-dim': (lambda: LeViT(**{**LEVIT_TINY, 'embed_dims': (32, 44, 64)}),
                      r'key_dim=8 must divide the stage width 44'),
    # stage strings / lists of the wrong length
    'vit-attention-list': (lambda: ViT(**VIT, attention=['inline'] * 3),
                           r"attention needs one entry per block \(2\), got 3"),
    'pvt-depths': (lambda: PVT(attention='inline', depths=(1, 1, 1)), r'depths needs one entry per stage \(4\), got 3'),
    'pvt-attention-list': (lambda: PVT(attention=('inline', ) * 3), r'attention needs one entry per stage \(4\), got 3'),
    'swin-attention-string': (lambda: Swin(attention=('I', 'I', 'S')),
                              r"attention needs one entry per stage \(4\), got 3: \('I', 'I', 'S'\)"),
    'swin-stage-blocks': (lambda: Swin(**SWIN_TINY, attention=('I', ('I', 'S', 'S'), 'S', 'S')),
                          r'attention entry of stage 1 names 3 blocks; the stage has depth 1'),
    'cswin-split-sizes': (lambda: CSwin(attention='inline', split_sizes=(1, 2, 7)),
                          r'split_sizes needs one entry per stage \(4\), got 3'),
    'levit-depths': (lambda: LeViT(**{**LEVIT_TINY, 'depths': (1, 1)}), r'depths needs one entry per stage \(3\), got 2'),
}


@pytest.mark.parametrize('case', sorted(BAD_ARGUMENTS))
def test_bad_backbone_arguments(case):
    build, message = BAD_ARGUMENTS[case]
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_config_through_the_registry():
    """The message survives mmengine's build wrapper (what a user of a config sees)."""
    with pytest.raises(ValueError, match=r"unknown attention type 'inlin'; expected one of"):
        ROOT_MODELS.build(dict(type='mmvitattn.PVT', attention='inlin'))


BAD_IMAGES = {
    'vit-channels': (lambda: ViT(**VIT, attention='inline'), (1, 1, 32, 32), r'ViT expects images of shape \(B, 3, H, W\)'),
    'pvt-channels': (lambda: PVT(attention='inline', **PVT_TINY), (1, 1, 32, 32), r'PVT expects images of shape \(B, 3'),
    'swin-channels': (lambda: Swin(attention='I', **SWIN_TINY), (1, 4, 32, 32), r'Swin expects images of shape \(B, 3'),
    'levit-channels': (lambda: LeViT(**LEVIT_TINY), (1, 1, 32, 32), r'LeViT expects images of shape \(B, 3'),
    'pvt-3d': (lambda: PVT(attention='inline', **PVT_TINY), (3, 32, 32), r'expects images of shape'),
    'pvt-too-small': (lambda: PVT(attention='sra', **PVT_TINY), (1, 3, 16, 16),
                      r'input 16x16 is too small for PVT: stage 1 \(stride 4\) gets a 4x4 token map, smaller than '
                      r'its sr_ratio=8; the input needs at least 29 pixels per side'),
}


@pytest.mark.parametrize('case', sorted(BAD_IMAGES))
def test_images_that_do_not_fit(case):
    build, shape, message = BAD_IMAGES[case]
    with pytest.raises(ValueError, match=message):
        build().eval()(torch.randn(shape))


def test_padded_image_too_small_for_spatial_reduction():
    """Batched with a large image, a small one still needs room for its own reduction cells."""
    model = PVT(attention='sra', **PVT_TINY).eval()
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[1, 16:] = True
    with pytest.raises(ValueError, match=r'input 16x64 is too small for PVT'):
        model(torch.randn(2, 3, 64, 64), mask)


# ---------------------------------------------------------------------------------------- data
@pytest.fixture(scope='module')
def coco_source(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco_src')
    make_coco_demo(str(root), num_train=3, num_val=1)
    return root


@pytest.fixture
def coco(coco_source, tmp_path):
    root = tmp_path / 'coco'
    shutil.copytree(coco_source, root)
    return root


def ann_path(root):
    return root / 'annotations' / 'instances_train2017.json'


def edit_annotations(root, edit):
    path = ann_path(root)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_clean_dataset_passes(coco):
    assert check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017')) == 3


def test_missing_image_file(coco):
    (coco / 'train2017' / '000000000002.jpg').unlink()
    with pytest.raises(DatasetMismatchError, match=r"image id 2: file .*000000000002.jpg not found"):
        check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017'))


def test_corrupt_image_file(coco):
    (coco / 'train2017' / '000000000001.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
    with pytest.raises(DatasetMismatchError, match=r'image id 1: file .*000000000001.jpg cannot be decoded'):
        check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017'))


def test_wrong_image_size(coco):
    def shrink(data):
        data['images'][0]['height'] = 99
    edit_annotations(coco, shrink)
    with pytest.raises(DatasetMismatchError, match=r'is 128x160 \(height x width\) but the annotation file says 99x160'):
        check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017'))


def test_annotations_point_at_unknown_images_and_categories(coco):
    def corrupt(data):
        data['annotations'][0]['image_id'] = 777
        data['annotations'][1]['category_id'] = 555
    edit_annotations(coco, corrupt)
    with pytest.raises(DatasetMismatchError) as info:
        check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017'))
    assert 'refers to image id 777, which the file does not list' in str(info.value)
    assert 'has category id 555, which the file does not list' in str(info.value)
    assert '(2 problems)' in str(info.value)


def test_not_a_coco_file(coco):
    ann_path(coco).write_text('{"images": []}')
    with pytest.raises(DatasetMismatchError, match=r"not in COCO format: it has no 'annotations', 'categories' list"):
        check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017'))
    ann_path(coco).write_text('{"images": [')
    with pytest.raises(DatasetMismatchError, match='is not valid JSON'):
        check_coco_dataset(str(ann_path(coco)), str(coco / 'train2017'))
    with pytest.raises(FileNotFoundError, match='annotation file not found: .*nothing.json'):
        check_coco_dataset(str(coco / 'nothing.json'), str(coco / 'train2017'))


def demo_train_dataset(root):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope
    cfg = Config.fromfile('configs/demo/mask-rcnn_inline-pvt-nano_fpn_coco-demo.py')
    init_default_scope('mmdet')
    cfg.train_dataloader.dataset.data_root = f'{root}/'
    return DATASETS.build(cfg.train_dataloader.dataset)


def test_demo_pipeline_rejects_an_image_of_the_wrong_size(coco):
    """In the pipeline: boxes and masks would be drawn for another size; fail at the image."""
    def shrink(data):
        data['images'][0]['width'] = 150
    edit_annotations(coco, shrink)
    dataset = demo_train_dataset(coco)
    with pytest.raises(DatasetMismatchError, match=r'000000000001.jpg is 128x160 \(height x width\) but its '
                                                   r'annotation says 128x150'):
        dataset[0]
    assert dataset[1]['inputs'].shape[-2:] == (128, 160)  # the others load


def test_demo_pipeline_names_a_corrupt_or_missing_image(coco):
    (coco / 'train2017' / '000000000001.jpg').write_bytes(b'garbage')
    (coco / 'train2017' / '000000000002.jpg').unlink()
    dataset = demo_train_dataset(coco)
    with pytest.raises(AssertionError, match=r'failed to load image: .*000000000001.jpg'):
        dataset[0]
    with pytest.raises(FileNotFoundError, match=r'000000000002.jpg'):
        dataset[1]
