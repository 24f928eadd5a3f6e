from .loading import LoadReport, load_pretrained, read_checkpoint, select_state_dict
from .safe_load import CheckpointReadError, UnsafeCheckpointError, load_checkpoint_file, register_with_mmengine

__all__ = ['CheckpointReadError', 'LoadReport', 'UnsafeCheckpointError', 'load_checkpoint_file', 'load_pretrained',
           'read_checkpoint', 'register_with_mmengine', 'select_state_dict']
