"""Dataset helpers. demo_data needs only numpy and Pillow (no torch, no OpenMMLab)."""
from .demo_data import (ADE_DEMO_DIRNAME, COCO_DEMO_DIRNAME, DEFAULT_IMAGE_SIZE,
                        DETECTION_CATEGORY_IDS, DETECTION_CLASSES, MARKER_NAME,
                        SEG_BACKGROUND_LABEL, SEGMENTATION_CLASSES, SHAPES, make_ade_demo,
                        make_coco_demo)

__all__ = [
    'ADE_DEMO_DIRNAME',
    'COCO_DEMO_DIRNAME',
    'DEFAULT_IMAGE_SIZE',
    'DETECTION_CATEGORY_IDS',
    'DETECTION_CLASSES',
    'MARKER_NAME',
    'SEGMENTATION_CLASSES',
    'SEG_BACKGROUND_LABEL',
    'SHAPES',
    'make_ade_demo',
    'make_coco_demo',
]
