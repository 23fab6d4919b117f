"""The TensorRT backend: a serialised engine (``temseg export --format tensorrt``) run on a
CUDA device with ``execute_async_v3`` on torch CUDA tensors (tensor addresses + a CUDA
stream); metadata from ``<engine>.json``.

This module imports without TensorRT; everything that needs it raises
:class:`TensorRTUnavailable` with the reason (no ``tensorrt`` package, only the type stubs,
no CUDA device). It type-checks with mypy against ``tensorrt-stubs``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...spec import read_sidecar

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["TensorRTBackend", "TensorRTRunner", "TensorRTUnavailable", "require_tensorrt",
           "tensorrt_unavailable_reason"]

TARGET_MAJOR = 10


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing on this machine."""


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can (real package + CUDA device).

    ``tensorrt-stubs`` alone installs a ``tensorrt`` namespace package without the bindings:
    that counts as not installed.
    """
    if not torch.cuda.is_available():
        return ("TensorRT needs an NVIDIA GPU with CUDA, and torch.cuda.is_available() is "
                "False on this machine (no GPU, no driver, or a CPU-only torch build); use "
                "`--format onnx` and the onnxruntime backend on CPU-only machines")
    try:
        trt_mod = importlib.import_module("tensorrt")
    except ImportError as exc:
        return f"the tensorrt Python package is not installed ({exc}); pip install tensorrt"
    if not hasattr(trt_mod, "Builder"):
        return ("only the tensorrt type stubs are installed, not TensorRT itself; "
                "pip install tensorrt")
    major = int(str(trt_mod.__version__).split(".")[0])
    if major < TARGET_MAJOR:
        return f"TensorRT {trt_mod.__version__} found, temseg needs TensorRT >= {TARGET_MAJOR}"
    return None


def require_tensorrt(what: str) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise TensorRTUnavailable(f"{what}: {reason}")


_TRT_TO_TORCH = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
                 "INT32": torch.int32, "INT64": torch.int64, "INT8": torch.int8,
                 "UINT8": torch.uint8, "BOOL": torch.bool}


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class TensorRTRunner:
    """Runs a serialised engine on a CUDA device: ``runner(batch) -> scores``.

    ``batch``: (B, 1, H, W) float32 tensor (any device); returns (B, C, H, W) float32 on the
    engine's device. The optimisation profile whose (min, max) range holds the shape is
    selected automatically; inputs/outputs are bound by tensor address and the engine is
    enqueued with ``execute_async_v3`` on a private CUDA stream.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cuda") -> None:
        require_tensorrt(f"{path}")
        import tensorrt as trt

        self.path = Path(path)
        self.spec = read_sidecar(self.path)
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise RuntimeError(f"{self.path}: TensorRT could not deserialise the engine "
                                   "(built by another TensorRT version or for another GPU?)")
            self.engine: trt.ICudaEngine = engine
            self.context: trt.IExecutionContext = engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {n: engine.get_tensor_mode(n) for n in names}
        self.input_name = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.output_dtype = _TRT_TO_TORCH[engine.get_tensor_dtype(self.output_name).name]
        self.ranges: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        for k in range(engine.num_optimization_profiles):
            lo, _, hi = engine.get_tensor_profile_shape(self.input_name, k)
            self.ranges.append((_dims(lo), _dims(hi)))
        self.profile = -1

    def _select_profile(self, shape: tuple[int, ...]) -> int:
        for k, (lo, hi) in enumerate(self.ranges):
            if all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                return k
        raise ValueError(f"{self.path}: input shape {shape} is outside every optimisation "
                         f"profile {self.ranges}; rebuild with --tile-sizes/--batch covering it")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, torch.float32).contiguous()
        shape = tuple(int(s) for s in x.shape)
        k = self._select_profile(shape)
        handle = self.stream.cuda_stream
        if k != self.profile:
            self.context.set_optimization_profile_async(k, handle)
            self.profile = k
        if not self.context.set_input_shape(self.input_name, shape):
            raise ValueError(f"{self.path}: TensorRT rejected input shape {shape}")
        out_shape = _dims(self.context.get_tensor_shape(self.output_name))
        out = torch.empty(out_shape, dtype=self.output_dtype, device=self.device)
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # x is ready
        if not self.context.execute_async_v3(handle):
            raise RuntimeError(f"{self.path}: execute_async_v3 failed")
        self.stream.synchronize()
        return out.float()


class TensorRTBackend:
    """The tiler's view of a :class:`TensorRTRunner`: (B, 1, th, tw) float32 normalised
    tiles -> (B, C, th, tw) float32 CPU probabilities."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str | torch.device = "cuda") -> None:
        self.runner = TensorRTRunner(path, device)
        self.spec = self.runner.spec
        self.num_classes = self.spec.num_classes
        self.precision = str(self.spec.extra.get("precision", "fp16"))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.runner(batch)
        out = out if self.spec.softmax else torch.softmax(out.float(), dim=1)
        return out.to("cpu", torch.float32)
