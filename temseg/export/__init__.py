"""Export of trained models for deployment: ONNX, TensorRT engines, AOTInductor packages.

See docs/deployment.md. Heavy dependencies (onnx, tensorrt, torch._inductor) are imported
lazily inside the functions. The metadata an export carries is the model's
:class:`temseg.spec.ModelSpec` (its flat form: :func:`temseg.spec.flat_metadata`).
"""

from .onnx import export_onnx, onnx_op_types, reference_ops, sanitize

__all__ = [
    "export_onnx",
    "onnx_op_types",
    "reference_ops",
    "sanitize",
]
