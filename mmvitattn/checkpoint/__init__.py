from .atomic import latest_resumable_checkpoint, register_atomic_save, save_checkpoint_atomically, write_atomically
from .loading import LoadReport, load_pretrained, read_checkpoint, select_state_dict
from .safe_load import CheckpointReadError, UnsafeCheckpointError, load_checkpoint_file, register_safe_loader

__all__ = ['CheckpointReadError', 'LoadReport', 'UnsafeCheckpointError', 'latest_resumable_checkpoint',
           'load_checkpoint_file', 'load_pretrained', 'read_checkpoint', 'register_with_mmengine',
           'save_checkpoint_atomically', 'select_state_dict', 'write_atomically']


def register_with_mmengine() -> None:
    """mmengine reads local checkpoint files with the safe loader and writes them atomically."""
    register_safe_loader()
    register_atomic_save()
