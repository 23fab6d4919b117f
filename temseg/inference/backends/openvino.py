"""The OpenVINO backend: an ONNX export (``temseg export``, fp32 or int8 QDQ) compiled by
OpenVINO's CPU plugin, which folds and fuses the graph (convolution + bias + activation +
residual add), prepacks the weights for the CPU's widest units (AMX, AVX-512 or AVX2) and
runs fp32, bf16 or int8 (VNNI / AMX-INT8) kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...spec import read_onnx_metadata

__all__ = ["OpenVinoBackend", "openvino_available"]

_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend:
    """An ONNX export run by OpenVINO on the CPU.

    ``precision``: "fp32" or "bf16" (the floating-point arithmetic; bf16 only on CPUs with
    native bf16 units, :func:`temseg.policy.cpu_has_native_bf16`). An int8 export
    (:func:`temseg.export.quantize.quantize_onnx`) runs its convolutions in int8 and the rest
    at ``precision``; the backend's ``precision`` then reads "int8". One compiled model per
    batch shape (static shapes compile to the fastest kernels; the tiler sends at most two:
    full batches and the last one), ``threads`` intra-op threads (default
    ``torch.get_num_threads()``), one stream: the same input gives the same labels.
    """

    def __init__(self, path: str | Path, precision: str = "fp32",
                 threads: int | None = None) -> None:
        import openvino as ov

        if precision not in _HINTS:
            raise ValueError(f"{path}: OpenVINO precision must be fp32 or bf16, "
                             f"got {precision!r}")
        self.path = Path(path)
        self.spec = read_onnx_metadata(self.path)
        self.num_classes = self.spec.num_classes
        self.float_precision = precision
        int8 = self.spec.extra.get("dtype") == "int8"
        self.precision = "int8" if int8 else precision
        self.name = "openvino" + ("-int8" if int8 else f"-{precision}")
        self._core = ov.Core()
        self._model = self._core.read_model(str(self.path))
        self._config = {"INFERENCE_PRECISION_HINT": _HINTS[precision],
                        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
                        "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                        "EXECUTION_MODE_HINT": "PERFORMANCE", "ENABLE_CPU_PINNING": False}
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _request(self, shape: tuple[int, ...]) -> Any:
        request = self._compiled.get(shape)
        if request is None:
            model = self._model.clone()
            model.reshape({self.spec.input_name: list(shape)})
            compiled = self._core.compile_model(model, "CPU", self._config)
            request = self._compiled[shape] = compiled.create_infer_request()
        return request

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 1, th, tw) float32 -> (B, C, th, tw) float32 probabilities."""
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        request = self._request(tuple(x.shape))
        out = torch.from_numpy(request.infer({0: x})[0].copy())
        return out if self.spec.softmax else torch.softmax(out, dim=1)


def openvino_available() -> bool:
    """True when openvino (and the exporter's onnx / onnxscript) import."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("openvino", "onnx", "onnxscript"))
