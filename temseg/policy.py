"""Device, precision and compile policy shared by training and inference.

Every choice is a fixed rule of what the hardware *is* (its CPU flags, its GPU's
capabilities), never a timing probe: a probe's answer moves with the machine's load, and
with it the results (the same command gave masks differing in hundreds of pixels when
bf16 was chosen on some runs and not on others). The rule and its reason are logged and
recorded in the outputs' metadata.

CPU rule: bf16 autocast on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX-BF16):
there oneDNN's bf16 convolutions ran 1.5-1.9x fp32 (AMD EPYC with AVX512-BF16, training
step and whole-slide inference, docs/benchmarks.md); on AVX2-only CPUs bf16 is emulated
and runs several times slower than fp32, so fp32 there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["AMP_CHOICES", "Precision", "choose_compile", "choose_device", "choose_precision",
           "cpu_flags", "cpu_has_native_bf16", "cpu_has_vnni", "cpu_model", "inference_precision",
           "machine"]

AMP_CHOICES = ("auto", "bf16", "off")


def _cpuinfo(field: str, path: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first ``field`` of /proc/cpuinfo (None where there is none or it cannot be read)."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(field) and ":" in line:
                return line.split(":", 1)[1].strip()
    return None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; ``platform.processor()`` elsewhere)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What a timed or time-budgeted result depends on, recorded beside it (training
    summaries, ``temseg cv``, the benchmarks): the CPU's model and its SIMD extensions that
    decide the kernels and precision (avx2 / avx512* / amx* / fma), logical CPUs, torch's
    threads and version, the CUDA device's name (None without one)."""
    simd = sorted(f for f in cpu_flags() if f.startswith(("avx2", "avx512", "amx", "fma")))
    return {"cpu_model": cpu_model(), "cpu_flags": " ".join(simd),
            "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic units (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_vnni() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


@dataclass(frozen=True)
class Precision:
    """What autocast does: ``dtype`` None means full fp32; ``scaler`` for fp16 on CUDA."""

    dtype: torch.dtype | None
    scaler: bool
    reason: str

    @property
    def name(self) -> str:
        """"fp32", "bf16" or "fp16" (what the outputs' metadata records)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def choose_precision(device: torch.device, amp: str = "auto") -> Precision:
    """``amp``: 'auto' (bf16 where the hardware has it, fp16 + grad scaler on older CUDA GPUs,
    fp32 on CPUs without bf16 units), 'bf16', 'fp16' or 'off'. A fixed rule: see the module
    docstring."""
    if amp == "off":
        return Precision(None, False, "fp32 (AMP off, requested)")
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return Precision(torch.float16, True, "fp16 autocast + grad scaler on CUDA")
        return Precision(torch.bfloat16, False, "bf16 autocast on CUDA")
    if amp in ("bf16", "on"):
        return Precision(torch.bfloat16, False, "bf16 autocast on CPU (forced)")
    if amp == "fp16":
        return Precision(torch.float16, False, "fp16 autocast on CPU (forced)")
    if cpu_has_native_bf16():
        return Precision(torch.bfloat16, False,
                         "bf16 autocast: this CPU has native bf16 units (AVX512-BF16/AMX)")
    return Precision(None, False, "fp32: this CPU has no native bf16 units (AVX2-era), where "
                     "bf16 runs several times slower; force with --amp bf16")


def inference_precision(device: str | torch.device = "cpu", amp: str = "auto") -> Precision:
    """Precision of the torch inference backend: ``amp`` "off" (fp32), "bf16" (forced) or
    "auto" (:func:`choose_precision`). On the held-out mice of the developer set bf16 changed
    mean Dice by at most 0.0002 (torch and OpenVINO, docs/benchmarks.md "Dice of each
    precision", Intel Xeon with AMX)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    return choose_precision(torch.device(device), amp)


def choose_compile(device: torch.device, compile_flag: str = "auto") -> tuple[bool, str]:
    """``compile_flag``: 'auto' | 'on' | 'off'. Auto compiles on CUDA only: on 2-core CPUs it
    gained 1.0-1.4x for 20-80 s of cold compile, which short runs never earn back, and on an
    AMX Xeon in bf16 it trained at 0.9x eager's patches/s (docs/development.md, stop 24)."""
    if compile_flag == "on":
        return True, "torch.compile on (requested)"
    if compile_flag == "off":
        return False, "torch.compile off (requested)"
    if device.type == "cuda":
        return True, "torch.compile on (CUDA)"
    return False, "torch.compile off on CPU (little gain for its compile time; --compile on)"


def choose_device(device: str = "auto") -> torch.device:
    """"auto": the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
