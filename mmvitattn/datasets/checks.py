"""Checks that a dataset's annotations match its images, with errors that name the file.

- :func:`check_coco_dataset`: before training, every image a COCO annotation file lists must
  exist, decode, and have the size the file gives it; annotations must point at listed images
  and categories. All problems are collected and reported at once (the first ``max_report``).
- ``CheckImageShape`` (pipeline transform, after ``LoadImageFromFile``): the loaded image must
  have the annotation's ``height`` x ``width``, otherwise boxes and masks would be drawn for
  another image size. mmdet's COCO dataset carries both; entries without them pass.

Reading only: nothing is written or changed.
"""
import json
import os
import os.path as osp
from typing import List, Optional

__all__ = ['DatasetMismatchError', 'check_coco_dataset', 'CheckImageShape']


class DatasetMismatchError(ValueError):
    """The annotation file does not describe the images it names."""


def _image_size(path: str):
    """(height, width) of an image file, decoding it fully so a truncated file is caught."""
    from PIL import Image
    with Image.open(path) as img:
        img.load()
        return img.height, img.width


def check_coco_dataset(ann_file: str, img_dir: str, check_images: bool = True, max_report: int = 10) -> int:
    """Check a COCO-format annotation file against the image folder; returns the image count.

    Raises ``DatasetMismatchError`` listing (up to ``max_report`` of) the missing, unreadable or
    wrongly sized images and the annotations that point at unknown images or categories.
    """
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetMismatchError(f'annotation file {ann_file} is not valid JSON: {e}') from None
    missing_keys = [k for k in ('images', 'annotations', 'categories') if not isinstance(coco, dict) or k not in coco]
    if missing_keys:
        raise DatasetMismatchError(f'annotation file {ann_file} is not in COCO format: it has no '
                                   f'{", ".join(repr(k) for k in missing_keys)} list')
    problems: List[str] = []
    image_ids = set()
    for entry in coco['images']:
        image_ids.add(entry.get('id'))
        name = entry.get('file_name')
        if not name:
            problems.append(f'image id {entry.get("id")!r} has no file_name')
            continue
        path = osp.join(img_dir, name)
        if not osp.isfile(path):
            problems.append(f'image id {entry.get("id")!r}: file {path} not found')
            continue
        if not check_images:
            continue
        try:
            size = _image_size(path)
        except Exception as e:  # PIL raises several types for corrupt files
            problems.append(f'image id {entry.get("id")!r}: file {path} cannot be decoded ({type(e).__name__}: {e})')
            continue
        expected = (entry.get('height'), entry.get('width'))
        if expected != size:
            problems.append(f'image id {entry.get("id")!r}: file {path} is {size[0]}x{size[1]} (height x width) '
                            f'but the annotation file says {expected[0]}x{expected[1]}')
    category_ids = {c.get('id') for c in coco['categories']}
    for ann in coco['annotations']:
        if ann.get('image_id') not in image_ids:
            problems.append(f'annotation id {ann.get("id")!r} refers to image id {ann.get("image_id")!r}, '
                            'which the file does not list')
        if ann.get('category_id') not in category_ids:
            problems.append(f'annotation id {ann.get("id")!r} has category id {ann.get("category_id")!r}, '
                            'which the file does not list')
    if problems:
        shown = '\n  '.join(problems[:max_report])
        more = f'\n  ... and {len(problems) - max_report} more' if len(problems) > max_report else ''
        raise DatasetMismatchError(f'annotation file {ann_file} does not match the images in {img_dir} '
                                   f'({len(problems)} problems):\n  {shown}{more}')
    return len(coco['images'])


def _register_transform():
    from mmcv.transforms import BaseTransform

    from ..registry import TRANSFORMS

    @TRANSFORMS.register_module()
    class CheckImageShape(BaseTransform):
        """Fail when a loaded image's size differs from its annotation's ``height``/``width``."""

        def transform(self, results: dict) -> Optional[dict]:
            expected = (results.get('height'), results.get('width'))
            if None in expected or 'img' not in results:
                return results
            actual = tuple(results['img'].shape[:2])
            if actual != tuple(int(v) for v in expected):
                raise DatasetMismatchError(
                    f'image {results.get("img_path")} is {actual[0]}x{actual[1]} (height x width) but its '
                    f'annotation says {expected[0]}x{expected[1]}: the annotation file does not match '
                    'its images')
            return results

    return CheckImageShape


try:
    CheckImageShape = _register_transform()
except ImportError:  # mmcv not installed: the file check alone is still usable
    CheckImageShape = None
