"""Deployment: ONNX export of backbones, segmentors and detectors' networks, checked against
PyTorch with onnxruntime (``pip install -r requirements/deploy.txt``)."""
from .graphs import (BackboneGraph, DenseDetectorGraph, SegmentorGraph, TwoStageDetectorGraph, graph_from_config,
                     model_graph)
from .onnx import (ExportCheckError, ExportResult, export_onnx, onnxruntime_session, token_square_values,
                   trace_onnx)

__all__ = [
    'BackboneGraph', 'SegmentorGraph', 'DenseDetectorGraph', 'TwoStageDetectorGraph', 'model_graph',
    'graph_from_config', 'export_onnx', 'trace_onnx', 'onnxruntime_session', 'ExportCheckError', 'ExportResult',
    'token_square_values'
]
