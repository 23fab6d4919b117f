"""Export of trained models for deployment: ONNX, TensorRT engines, AOTInductor packages.

See docs/deployment.md. Heavy dependencies (onnx, tensorrt, torch._inductor) are imported
lazily inside the functions.
"""

from .metadata import ModelInfo, flat_metadata, read_onnx_metadata, read_sidecar, write_sidecar
from .onnx import export_onnx, onnx_op_types, reference_ops, sanitize

__all__ = [
    "ModelInfo",
    "export_onnx",
    "flat_metadata",
    "onnx_op_types",
    "read_onnx_metadata",
    "read_sidecar",
    "reference_ops",
    "sanitize",
    "write_sidecar",
]
