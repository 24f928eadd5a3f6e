"""Tests for the synthetic demo datasets (mmvitattn.datasets.demo_data)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmvitattn.datasets import demo_data
from mmvitattn.datasets.demo_data import (DETECTION_CATEGORY_IDS, DETECTION_CLASSES,
                                          MARKER_NAME, SEGMENTATION_CLASSES,
                                          make_ade_demo, make_coco_demo)

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_train=6, num_val=6)
COCO_SPLITS = ('train2017', 'val2017')
ADE_SPLITS = ('training', 'validation')
# The dominant RGB channel of each class's hue: red disc, green triangle, blue rectangle.
DOMINANT_CHANNEL = (0, 1, 2)


# --------------------------------------------------------------------------- #
# helpers (independent of the implementation under test)
# --------------------------------------------------------------------------- #
def _tree(root):
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _mtimes(root):
    return {str(p): p.stat().st_mtime_ns for p in Path(root).rglob('*')}


def _leftovers(parent):
    return [p.name for p in Path(parent).iterdir() if '.tmp-' in p.name or '.old-' in p.name]


def _shoelace(flat):
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _dilate(mask, r):
    h, w = mask.shape
    padded = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def _erode(mask, r):
    return ~_dilate(~mask, r)


def _polygon_mask(flat, width, height):
    """Pixels whose centre (col + .5, row + .5) lies inside the polygon (even-odd).

    The COCO convention, also what pycocotools' polygon rasterization approximates.
    """
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    px = np.arange(width)[None, :] + 0.5
    py = np.arange(height)[:, None] + 0.5
    inside = np.zeros((height, width), dtype=bool)
    for (x1, y1), (x2, y2) in zip(xy, np.roll(xy, -1, axis=0)):
        if y1 != y2:
            crosses = (y1 > py) != (y2 > py)
            inside ^= crosses & (px < x1 + (py - y1) * (x2 - x1) / (y2 - y1))
    return inside


def _saturation(rgb):
    """HSV saturation of an (..., 3) float array in 0..255."""
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-9), 0.0)


def _load_coco(root, split):
    with open(Path(root) / 'annotations' / f'instances_{split}.json') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco') / 'coco'
    info = make_coco_demo(root, **SMALL)
    assert info['generated']
    return root


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('ade') / 'ade'
    info = make_ade_demo(root, **SMALL)
    assert info['generated']
    return root


# --------------------------------------------------------------------------- #
# class definitions
# --------------------------------------------------------------------------- #
def test_class_constants():
    assert DETECTION_CLASSES == ('sports ball', 'kite', 'tv')
    # The official COCO ids of these names.
    assert DETECTION_CATEGORY_IDS == (37, 38, 72)
    # A prefix of ADE20K's 150-class list, so mmseg keeps the label ids.
    assert SEGMENTATION_CLASSES == ('wall', 'building', 'sky', 'floor')


# --------------------------------------------------------------------------- #
# COCO
# --------------------------------------------------------------------------- #
def test_coco_layout_images_and_categories(coco_root):
    assert (coco_root / MARKER_NAME).is_file()
    for split in COCO_SPLITS:
        coco = _load_coco(coco_root, split)
        assert [c['name'] for c in coco['categories']] == list(DETECTION_CLASSES)
        assert [c['id'] for c in coco['categories']] == list(DETECTION_CATEGORY_IDS)
        assert len(coco['images']) == SMALL['num_train' if split == 'train2017' else 'num_val']
        assert len({im['id'] for im in coco['images']}) == len(coco['images'])
        on_disk = sorted(p.name for p in (coco_root / split).iterdir())
        assert on_disk == sorted(im['file_name'] for im in coco['images'])
        for im in coco['images']:
            assert (im['width'], im['height']) == demo_data.DEFAULT_IMAGE_SIZE
            with Image.open(coco_root / split / im['file_name']) as pil:
                assert pil.format == 'JPEG' and pil.mode == 'RGB'
                assert pil.size == (im['width'], im['height'])


def test_coco_annotation_geometry(coco_root):
    for split in COCO_SPLITS:
        coco = _load_coco(coco_root, split)
        images = {im['id']: im for im in coco['images']}
        ann_ids = [a['id'] for a in coco['annotations']]
        assert len(set(ann_ids)) == len(ann_ids)
        per_image = {i: 0 for i in images}
        for ann in coco['annotations']:
            im = images[ann['image_id']]
            per_image[ann['image_id']] += 1
            assert ann['category_id'] in DETECTION_CATEGORY_IDS
            assert ann['iscrowd'] == 0
            x, y, w, h = ann['bbox']
            assert all(isinstance(v, float) for v in ann['bbox'])
            assert x >= 0 and y >= 0 and x + w <= im['width'] and y + h <= im['height']
            assert 10 <= min(w, h) and max(w, h) <= 60.5, ann['bbox']
            assert isinstance(ann['segmentation'], list) and len(ann['segmentation']) == 1
            flat = ann['segmentation'][0]
            assert len(flat) % 2 == 0 and len(flat) >= 6
            xy = np.asarray(flat).reshape(-1, 2)
            eps = 0.011  # values are rounded to 2 decimals
            assert xy[:, 0].min() >= x - eps and xy[:, 0].max() <= x + w + eps
            assert xy[:, 1].min() >= y - eps and xy[:, 1].max() <= y + h + eps
            # The bbox is tight around the polygon.
            assert xy[:, 0].min() == pytest.approx(x, abs=eps)
            assert xy[:, 1].max() == pytest.approx(y + h, abs=eps)
            # `area` is the painted pixel count; the exact polygon area must match it.
            poly_area = _shoelace(flat)
            assert ann['area'] == pytest.approx(poly_area, rel=0.08), ann
        # Every image has 1 to 4 objects (mmdet drops images without boxes).
        assert all(1 <= n <= 4 for n in per_image.values()), per_image


def _coco_objects(root):
    """Yield (split, image dict, pixels float (H, W, 3), [annotations]) per image."""
    for split in COCO_SPLITS:
        coco = _load_coco(root, split)
        for im in coco['images']:
            with Image.open(root / split / im['file_name']) as pil:
                pixels = np.asarray(pil.convert('RGB')).astype(np.float64)
            anns = [a for a in coco['annotations'] if a['image_id'] == im['id']]
            yield split, im, pixels, anns


def test_coco_objects_are_painted_where_annotated(coco_root):
    """Class colour under each polygon, background around it, masks disjoint."""
    for _, im, pixels, anns in _coco_objects(coco_root):
        occupied = np.zeros((im['height'], im['width']), dtype=bool)
        for ann in anns:
            mask = _polygon_mask(ann['segmentation'][0], im['width'], im['height'])
            assert not (mask & occupied).any(), 'objects overlap'
            occupied |= mask
            inner = _erode(mask, 2)
            assert inner.sum() > 20
            mean = pixels[inner].mean(axis=0)
            cls = DETECTION_CATEGORY_IDS.index(ann['category_id'])
            assert int(np.argmax(mean)) == DOMINANT_CHANNEL[cls], (ann, mean)
            # A ring just outside the object is low-saturation background.
            ring = _dilate(mask, 3) & ~_dilate(mask, 1)
            assert (np.median(_saturation(pixels[inner]))
                    > np.median(_saturation(pixels[ring])) + 0.3), ann


def test_coco_painted_pixels_match_polygons_exactly(coco_root):
    """Segment each object by saturation and compare with its polygon, pixel by pixel.

    Correct data disagrees on ~1 % of the boundary pixels (JPEG); painting shifted
    by a third of a pixel, or PIL's outline-inclusive fill, disagrees on 25 %+.
    """
    ratios = []
    for _, im, pixels, anns in _coco_objects(coco_root):
        sat = _saturation(pixels)
        for ann in anns:
            mask = _polygon_mask(ann['segmentation'][0], im['width'], im['height'])
            near = _dilate(mask, 4)
            ring = near & ~_dilate(mask, 2)
            threshold = (np.median(sat[_erode(mask, 2)]) + np.median(sat[ring])) / 2
            painted = (sat > threshold) & near
            boundary = mask & _dilate(~mask, 1)
            ratios.append((painted ^ mask).sum() / boundary.sum())
    assert len(ratios) >= SMALL['num_train'] + SMALL['num_val']
    assert np.mean(ratios) < 0.1, ratios


def test_coco_pycocotools_roundtrip(coco_root):
    coco_mod = pytest.importorskip('pycocotools.coco')
    cocoeval_mod = pytest.importorskip('pycocotools.cocoeval')
    for split in COCO_SPLITS:
        gt = coco_mod.COCO(str(coco_root / 'annotations' / f'instances_{split}.json'))
        assert gt.getCatIds(catNms=list(DETECTION_CLASSES)) == sorted(DETECTION_CATEGORY_IDS)
        for ann in gt.dataset['annotations']:
            mask = gt.annToMask(ann)
            assert mask.shape == (gt.imgs[ann['image_id']]['height'],
                                  gt.imgs[ann['image_id']]['width'])
            # pycocotools rasterizes the polygon to (nearly) the painted pixels: it
            # differs only along the outline, by well under half a pixel per unit length.
            xy = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
            perimeter = np.hypot(*(xy - np.roll(xy, -1, axis=0)).T).sum()
            assert abs(int(mask.sum()) - ann['area']) <= 0.4 * perimeter, ann
        # Ground truth submitted as detections must score a perfect AP.
        for iou_type in ('bbox', 'segm'):
            results = []
            for ann in gt.dataset['annotations']:
                res = {'image_id': ann['image_id'], 'category_id': ann['category_id'],
                       'score': 1.0}
                if iou_type == 'bbox':
                    res['bbox'] = ann['bbox']
                else:
                    res['segmentation'] = gt.annToRLE(ann)
                results.append(res)
            dt = gt.loadRes(results)
            ev = cocoeval_mod.COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0), (split, iou_type)


# --------------------------------------------------------------------------- #
# ADE20K
# --------------------------------------------------------------------------- #
def test_ade_layout_and_labels(ade_root):
    assert (ade_root / MARKER_NAME).is_file()
    for split, count in zip(ADE_SPLITS, (SMALL['num_train'], SMALL['num_val'])):
        images = sorted((ade_root / 'images' / split).iterdir())
        labels = sorted((ade_root / 'annotations' / split).iterdir())
        assert len(images) == count
        assert [p.stem for p in images] == [p.stem for p in labels]
        assert all(p.suffix == '.jpg' for p in images)
        assert all(p.suffix == '.png' for p in labels)
        seen = set()
        for img_path, lbl_path in zip(images, labels):
            with Image.open(img_path) as img, Image.open(lbl_path) as lbl:
                assert img.mode == 'RGB' and lbl.mode == 'L'
                assert img.size == lbl.size == demo_data.DEFAULT_IMAGE_SIZE
                pixels = np.asarray(img).astype(np.float64)
                label = np.asarray(lbl)
            values = set(np.unique(label).tolist())
            assert values <= {1, 2, 3, 4}, values
            assert 1 in values and len(values) >= 2  # background plus at least one shape
            seen |= values
            for value in values - {1}:
                inner = _erode(label == value, 2)
                if inner.sum() > 20:
                    mean = pixels[inner].mean(axis=0)
                    assert int(np.argmax(mean)) == DOMINANT_CHANNEL[value - 2], (lbl_path, value)
        # Each shape class occurs in every split.
        assert seen == {1, 2, 3, 4}, (split, seen)


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('make', [make_coco_demo, make_ade_demo])
def test_same_seed_same_bytes_other_seed_other_bytes(make, tmp_path):
    make(tmp_path / 'a', seed=3, **SMALL)
    make(tmp_path / 'b', seed=3, **SMALL)
    make(tmp_path / 'c', seed=4, **SMALL)
    a, b, c = _tree(tmp_path / 'a'), _tree(tmp_path / 'b'), _tree(tmp_path / 'c')
    assert len(a) > 10
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert sum(k.endswith('.jpg') for k in differing) == 2 * SMALL['num_train']
    assert sum(k.endswith(('.json', '.png')) for k in differing) >= 2


def test_images_do_not_depend_on_split_sizes(tmp_path):
    make_ade_demo(tmp_path / 'big', num_train=6, num_val=2)
    make_ade_demo(tmp_path / 'small', num_train=3, num_val=1)
    big, small = _tree(tmp_path / 'big'), _tree(tmp_path / 'small')
    shared = [k for k in small if k != MARKER_NAME]
    assert shared and all(small[k] == big[k] for k in shared)


# --------------------------------------------------------------------------- #
# skip-if-complete, atomic replacement
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('make', [make_coco_demo, make_ade_demo])
def test_skip_when_complete_and_regenerate_otherwise(make, tmp_path):
    root = tmp_path / 'ds'
    first = make(root, **SMALL)
    assert first['generated']
    before = _mtimes(root)
    second = make(root, **SMALL)
    assert not second['generated']
    assert second['stats'] == first['stats']
    assert _mtimes(root) == before  # nothing was rewritten

    # Other parameters: regenerated in place.
    third = make(root, seed=1, **SMALL)
    assert third['generated']
    assert json.loads((root / MARKER_NAME).read_text())['params']['seed'] == 1

    # A missing file, even with the marker present: regenerated.
    victim = sorted(p for p in root.rglob('*.jpg'))[0]
    victim.unlink()
    assert make(root, seed=1, **SMALL)['generated']
    assert victim.is_file()

    # No marker: regenerated.
    (root / MARKER_NAME).unlink()
    assert make(root, seed=1, **SMALL)['generated']
    assert (root / MARKER_NAME).is_file()
    assert not make(root, seed=1, **SMALL)['generated']
    assert _leftovers(tmp_path) == []


def test_failure_leaves_no_partial_dataset(tmp_path, monkeypatch):
    root = tmp_path / 'ds'
    make_coco_demo(root, **SMALL)
    good = _tree(root)
    real_save, calls = demo_data._save_jpeg, []

    def failing_save(pixels, path):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError('disk full')
        real_save(pixels, path)

    monkeypatch.setattr(demo_data, '_save_jpeg', failing_save)
    # Regeneration with new parameters fails half-way: the old dataset survives.
    with pytest.raises(RuntimeError, match='disk full'):
        make_coco_demo(root, seed=7, **SMALL)
    assert _tree(root) == good
    # A fresh root that fails is never created.
    calls.clear()
    with pytest.raises(RuntimeError, match='disk full'):
        make_coco_demo(tmp_path / 'fresh', **SMALL)
    assert not (tmp_path / 'fresh').exists()
    assert _leftovers(tmp_path) == []


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='notes.txt'):
        make_ade_demo(root, **SMALL)
    assert (root / 'notes.txt').read_text() == 'keep me'
    # An existing empty directory is fine.
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert make_ade_demo(empty, **SMALL)['generated']


# --------------------------------------------------------------------------- #
# argument validation
# --------------------------------------------------------------------------- #
BAD_ARGS = [
    ('num_train', 0),
    ('num_train', -3),
    ('num_train', 2.5),
    ('num_train', True),
    ('num_train', '6'),
    ('num_val', 0),
    ('image_size', (63, 128)),
    ('image_size', (160, 32)),
    ('image_size', (160,)),
    ('image_size', 160),
    ('image_size', (160.0, 128)),
    ('seed', -1),
    ('seed', 1.5),
]


@pytest.mark.parametrize('make', [make_coco_demo, make_ade_demo])
@pytest.mark.parametrize('name,value', BAD_ARGS)
def test_bad_arguments_raise_value_error(make, name, value, tmp_path):
    kwargs = dict(SMALL, **{name: value})
    with pytest.raises(ValueError) as err:
        make(tmp_path / 'ds', **kwargs)
    assert name in str(err.value) and repr(value) in str(err.value)
    assert not (tmp_path / 'ds').exists()


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def test_cli_runs_without_installation(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    script = str(REPO_ROOT / 'tools' / 'make_demo_data.py')
    cmd = [sys.executable, script, 'all', '--out', str(tmp_path / 'data'),
           '--num-train', '3', '--num-val', '2', '--seed', '5']
    # Run from elsewhere, so only the script's own sys.path fix can find the package.
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    coco_root = tmp_path / 'data' / demo_data.COCO_DEMO_DIRNAME
    ade_root = tmp_path / 'data' / demo_data.ADE_DEMO_DIRNAME
    assert str(coco_root) in proc.stdout and str(ade_root) in proc.stdout
    assert len(_load_coco(coco_root, 'train2017')['images']) == 3
    assert len(list((ade_root / 'images' / 'validation').iterdir())) == 2

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and 'already complete' in again.stdout

    bad = subprocess.run([sys.executable, script, 'ade', '--out', str(tmp_path / 'x'),
                          '--num-val', '0'], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and 'num_val' in bad.stderr
