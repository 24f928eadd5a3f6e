from .safe_load import UnsafeCheckpointError, load_checkpoint_file, register_with_mmengine

__all__ = ['UnsafeCheckpointError', 'load_checkpoint_file', 'register_with_mmengine']
