"""Backend selection shared by the public functions (no Triton import at module load).

Triton is imported lazily, the first time a kernel is actually launched, so that
``import temseg.kernels`` works without Triton and so that ``TRITON_INTERPRET`` (read by
``@triton.jit`` when the kernel modules are imported) can still be set by a test harness after
torch and triton themselves have been imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]
_BACKENDS = ("auto", "triton", "torch")


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a true value (kernels run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


try:
    _TRITON_FOUND = importlib.util.find_spec("triton") is not None
except (ImportError, ValueError):
    _TRITON_FOUND = False


def triton_available() -> bool:
    """True when the ``triton`` package is installed (looked up once at import, not imported)."""
    return _TRITON_FOUND


def check_launch(device: torch.device, interpreted: bool) -> None:
    """Before a kernel launch: CPU tensors only work when the kernel module was decorated under
    the interpreter (``TRITON_INTERPRET=1`` when it was first imported)."""
    if device.type != "cuda" and not interpreted:
        raise RuntimeError(
            f"Triton kernel launched on {device.type} tensors, but the kernel modules were "
            "imported without TRITON_INTERPRET=1: set it before the first Triton call"
        )


def exporting() -> bool:
    """True while tracing for ONNX / TorchScript: those graphs must use the reference ops.

    ``torch.onnx.is_in_onnx_export`` and ``torch.jit.is_tracing`` cover the TorchScript-based
    exporter; the flag module read below covers the dynamo-based ``torch.onnx.export`` (dynamo
    constant-folds ``is_in_onnx_export()`` to False while it traces).
    """
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return True
    flags = sys.modules.get("torch.onnx._internal.exporter._flags")
    return bool(getattr(flags, "_is_onnx_exporting", False))


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Decide the path of one call; raise a clear error when Triton is forced but unusable.

    Args:
        backend: ``"auto"`` (Triton for CUDA tensors), ``"triton"`` or ``"torch"``.
        tensors: the floating-point inputs of the op (device checked on the first one).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch" or exporting():
        return False
    device = tensors[0].device
    if backend == "auto":
        return device.type == "cuda" and triton_available()
    # backend == "triton"
    if not triton_available():
        raise RuntimeError(
            "backend='triton' needs the 'triton' package, which is not installed "
            "(pip install 'temseg[triton]'), or use backend='torch'"
        )
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"backend='triton' got {device.type} tensors: the Triton kernels need CUDA tensors, "
            "or TRITON_INTERPRET=1 (set before the kernels are first used) to run them on the "
            "CPU through Triton's interpreter"
        )
    return True
