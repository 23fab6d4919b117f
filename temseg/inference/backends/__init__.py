"""Inference backends behind one small interface: ``backend(batch) -> probabilities``.

A backend takes a batch of normalised tiles (B, 1, th, tw) float32 (a CPU tensor) and returns
class probabilities (B, C, th, tw) float32 (a CPU tensor); it carries ``name``,
``num_classes``, ``precision`` ("fp32" / "bf16" / "fp16") and the model's ``spec``
(:class:`temseg.spec.ModelSpec`). Every backend feeds the same C++ tiler, so switching
backends changes nothing else.

* :mod:`.pytorch` (``torch``): a checkpoint's model, eager or compiled, fp32 or autocast;
* :mod:`.onnxruntime`: an ``.onnx`` export (a checkpoint is exported once into a cache);
* :mod:`.openvino`: the same ``.onnx`` export compiled by OpenVINO (fused, prepacked; fp32,
  bf16, or int8 for an int8 export);
* :mod:`.tensorrt`: a TensorRT engine on a CUDA device;
* :mod:`.aoti`: an AOTInductor package (what the C++ runtime loads).

:func:`open_backend` opens any model source with any backend that can run it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch

from ...checkpoint import SegmentationModel, load_model
from ...policy import cpu_has_vnni, inference_precision
from ...spec import ENGINE_SUFFIXES, ModelSpec
from .onnxruntime import (
    OnnxRuntimeBackend,
    cached_int8_onnx,
    cached_onnx,
    onnxruntime_available,
)
from .openvino import OpenVinoBackend, openvino_available
from .pytorch import TorchBackend

__all__ = ["BACKENDS", "Backend", "OnnxRuntimeBackend", "OpenVinoBackend", "TorchBackend",
           "default_backend", "make_backend", "open_backend", "use_int8"]

log = logging.getLogger("temseg.backends")

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "aoti")


class Backend(Protocol):
    """What the tiler calls."""

    name: str
    num_classes: int
    precision: str
    spec: ModelSpec

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 1, th, tw) float32 normalised tiles -> (B, C, th, tw) float32 probabilities."""
        ...


def default_backend(device: str | torch.device = "cpu", amp: str = "auto") -> str:
    """The backend used when none is given: a fixed rule of the hardware, never a timing.

    CPU: "openvino" when installed (its precision: :func:`use_int8` and ``amp``: int8 where
    the CPU has VNNI and the model carries calibration patches, else bf16 on CPUs with
    native bf16 units, :func:`temseg.policy.choose_precision`, else fp32, 1.2-1.5x torch fp32
    in the runs so far, like ONNX Runtime fp32 within the noise); without OpenVINO, "torch"
    in bf16 on those CPUs, else fp32 "onnxruntime" when installed, else "torch". GPUs:
    "torch" (TensorRT needs an engine built beforehand). The measurements behind it:
    docs/benchmarks.md.
    """
    if torch.device(device).type != "cpu":
        return "torch"
    if openvino_available():
        return "openvino"
    if inference_precision(device, amp).dtype is None and onnxruntime_available():
        return "onnxruntime"
    return "torch"


def use_int8(model: SegmentationModel, amp: str = "auto") -> tuple[bool, str]:
    """(int8?, why) for the openvino backend of a checkpoint: int8 when ``amp`` is "auto",
    the CPU has int8 dot-product units (:func:`temseg.policy.cpu_has_vnni`) and the model
    carries calibration patches (every model temseg trains does). A fixed rule: held-out
    Dice within 0.0003 of fp32 and 1.6x OpenVINO bf16 at width 32 (docs/benchmarks.md)."""
    if amp != "auto":
        return False, f"--amp {amp}: floating point"
    if not cpu_has_vnni():
        return False, "no VNNI on this CPU: floating point"
    if getattr(model, "calibration", None) is None:
        return False, "the model carries no calibration patches: floating point"
    return True, "int8 convolutions: this CPU has VNNI and the model carries calibration patches"


def make_backend(name: str, model: SegmentationModel, device: str | torch.device = "cpu",
                 amp: str = "auto", compile: bool = False) -> Backend:
    """A backend by name (``BACKENDS``, or "auto": :func:`default_backend`) for a
    checkpoint's ``model``. ``amp`` ("off" | "bf16" | "auto") applies to torch;
    "onnxruntime" exports the model once (cached); "tensorrt" / "aoti" need an exported
    file: pass it to :func:`open_backend` instead."""
    if name == "auto":
        name = default_backend(device, amp)
    if name == "torch":
        precision = inference_precision(device, amp)
        log.info("torch backend on %s: %s", device, precision.reason)
        return TorchBackend(model, device, compile=compile, amp=precision.dtype)
    if name == "onnxruntime":
        return OnnxRuntimeBackend.from_model(model, device)
    if name == "openvino":
        int8, why = use_int8(model, amp)
        log.info("openvino backend: %s", why)
        return _openvino(cached_int8_onnx(model) if int8 else cached_onnx(model), device, amp)
    if name in ("tensorrt", "aoti"):
        ext = ".engine" if name == "tensorrt" else ".pt2"
        raise ValueError(f"the {name} backend runs an exported file: build one with `temseg "
                         f"export MODEL --format {name} --out X{ext}` and pass X{ext}")
    raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")


def _openvino(path: Path, device: str | torch.device, amp: str) -> Backend:
    """OpenVINO on the CPU, its floating-point precision by the ``amp`` rule (logged)."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"{path}: the openvino backend runs on the CPU, not {device}")
    precision = inference_precision(device, amp)
    log.info("openvino backend: %s", precision.reason)
    return OpenVinoBackend(path, "bf16" if precision.dtype is torch.bfloat16 else "fp32")


def _onnx_backend(path: Path, backend: str, device: str | torch.device, amp: str) -> Backend:
    """An ``.onnx`` export: ONNX Runtime or OpenVINO (auto: :func:`default_backend`)."""
    if backend not in ("auto", "onnxruntime", "openvino"):
        raise ValueError(f"{path}: an ONNX file runs with --backend onnxruntime or openvino, "
                         f"not {backend}")
    if backend == "openvino" or (backend == "auto"
                                 and default_backend(device, amp) == "openvino"):
        return _openvino(path, device, amp)
    return OnnxRuntimeBackend(path, device)


def _file_backend(path: Path, kind: str, backend: str, device: str | torch.device) -> Backend:
    """The only backend that runs an exported file of ``kind``."""
    if backend not in ("auto", kind):
        raise ValueError(f"{path}: this file runs with --backend {kind}, not {backend}")
    if kind == "aoti":
        from .aoti import AotiBackend

        return AotiBackend(path)
    from ...spec import read_sidecar
    from .tensorrt import TensorRTBackend

    read_sidecar(path)  # a clear error before touching TensorRT / CUDA
    return TensorRTBackend(path, device if torch.device(device).type == "cuda" else "cuda")


def open_backend(source: str | Path | SegmentationModel, backend: str = "auto",
                 device: str | torch.device = "cpu", amp: str = "auto",
                 compile: bool = False) -> Backend:
    """Open a model source with a backend.

    ``source``: a :class:`~temseg.checkpoint.SegmentationModel`, a checkpoint file or run
    folder (torch / onnxruntime / openvino), an ``.onnx`` export (onnxruntime / openvino),
    a TensorRT engine ``.engine`` / ``.plan`` / ``.trt`` with its ``.json`` (tensorrt) or an
    AOTInductor package ``.pt2`` (aoti). ``backend`` "auto": the file's own for engines and
    packages, else :func:`default_backend`.
    """
    if isinstance(source, SegmentationModel):
        return make_backend(backend, source, device, amp, compile)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_backend(path, backend, device, amp)
    if suffix in ENGINE_SUFFIXES:
        return _file_backend(path, "tensorrt", backend, device)
    if suffix == ".pt2":
        return _file_backend(path, "aoti", backend, device)
    return make_backend(backend, load_model(path, device), device, amp, compile)
