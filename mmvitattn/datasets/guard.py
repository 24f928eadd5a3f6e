"""A sample that cannot be loaded: one error naming the file and the index, or skipped.

mmengine's ``BaseDataset`` runs the pipeline for one index; an image that does not decode or an
annotation that breaks a transform surfaces as an exception from deep inside it (or from a data
loader worker) that does not say which sample it was. :func:`guard_samples` wraps
``BaseDataset.prepare_data``: a failure becomes :class:`SampleLoadError` naming the dataset index
and the sample's files, or, with ``skip=True`` and a training dataset (``test_mode=False``, where
``BaseDataset.__getitem__`` draws a replacement when the pipeline returns None), is logged,
counted and replaced by another sample.

It is installed when the fault hook is built, before the Runner builds its data loaders, so
forked data loader workers inherit it; the count lives in shared memory, so samples skipped in
those workers are counted too. (Datasets that override ``prepare_data``, such as mmdet's video
datasets, are not covered.)
"""
import logging
import multiprocessing
from typing import Iterator

REMEMBERED_INDICES = 1024  # distinct skipped samples counted exactly per epoch (beyond: every skip)


class SampleLoadError(RuntimeError):
    """A dataset sample could not be loaded; the message names its index and files."""


class SkippedSamples:
    """The distinct indices skipped since the last report, in memory shared with the data loader
    workers (a bad sample drawn again as a replacement is not counted twice)."""

    def __init__(self):
        self._count = multiprocessing.Value('l', 0)
        self._indices = multiprocessing.Array('l', REMEMBERED_INDICES)

    def add(self, index: int) -> None:
        with self._count.get_lock():
            known = min(self._count.value, REMEMBERED_INDICES)
            if index in self._indices[:known]:
                return
            if known < REMEMBERED_INDICES:
                self._indices[known] = index
            self._count.value += 1

    def take(self):
        """(count, remembered indices) since the last call, and start counting again."""
        with self._count.get_lock():
            count = self._count.value
            indices = list(self._indices[:min(count, REMEMBERED_INDICES)])
            self._count.value = 0
        return count, indices


def sample_files(dataset, index: int) -> str:
    """The files of one sample, as its data info names them (mmdet / mmseg keys)."""
    try:
        info = dataset.get_data_info(index)
    except Exception as err:  # the annotation itself may be what is broken
        return f'files unknown: get_data_info failed with {type(err).__name__}: {err}'
    files = [str(info[k]) for k in ('img_path', 'seg_map_path') if isinstance(info, dict) and info.get(k)]
    return ', '.join(files) if files else 'no file path in its data info'


_STATE = dict(skip=False, skipped=None, original=None)


def _guarded_prepare_data(dataset, index):
    try:
        return _STATE['original'](dataset, index)
    except Exception as err:
        where = f'{type(dataset).__name__} index {index} ({sample_files(dataset, index)})'
        cause = f'{type(err).__name__}: {str(err).strip() or "no message"}'
        if not (_STATE['skip'] and not dataset.test_mode):
            raise SampleLoadError(
                f'sample {where} could not be loaded: {cause}. To skip such training samples, set '
                "bad_samples='skip' in mmvitattn.FaultToleranceHook.") from err
        from mmengine.logging import print_log
        print_log(f'skipped training sample {where}: {cause}', logger='current', level=logging.WARNING)
        _STATE['skipped'].add(index)
        return None  # BaseDataset.__getitem__ draws another sample in training mode


def guard_samples(skip: bool) -> SkippedSamples:
    """Name (or, with ``skip``, skip in training datasets) samples whose loading fails, in every
    mmengine dataset of this process and of data loader workers forked later. Returns the skip
    counter (shared with those workers)."""
    from mmengine.dataset import BaseDataset
    if _STATE['original'] is None:
        _STATE['original'] = BaseDataset.prepare_data
        _STATE['skipped'] = SkippedSamples()
        BaseDataset.prepare_data = _guarded_prepare_data
    _STATE['skip'] = bool(skip)
    return _STATE['skipped']


def base_datasets(dataset) -> Iterator:
    """The mmengine ``BaseDataset`` instances inside dataset wrappers (Concat, Repeat, ...)."""
    from mmengine.dataset import BaseDataset
    if isinstance(dataset, BaseDataset):
        yield dataset
        return
    inner = getattr(dataset, 'datasets', None) or [getattr(dataset, 'dataset', None)]
    for child in inner:
        if child is not None:
            yield from base_datasets(child)
