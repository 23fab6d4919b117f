"""Device, mixed-precision and compile policy, decided at run time from the hardware."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic units (AVX512-BF16 or AMX). Without them (AVX2
    machines) bf16 autocast convolutions run several times slower than fp32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    cpu = getattr(torch._C, "_cpu", None)
    for name in probes:
        fn = getattr(cpu, name, None)
        if fn is not None:
            with contextlib.suppress(Exception):
                if fn():
                    return True
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return " avx512_bf16" in flags or " amx_bf16" in flags
    return False


@dataclass(frozen=True)
class Precision:
    """What autocast does: ``dtype`` None means full fp32; ``scaler`` for fp16 on CUDA."""

    dtype: torch.dtype | None
    scaler: bool
    reason: str

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def choose_precision(device: torch.device, amp: str = "auto") -> Precision:
    """``amp``: 'auto' (bf16 where the hardware has it, fp16 + grad scaler on older CUDA GPUs,
    off on CPUs without bf16 units), 'bf16', 'fp16' or 'off'."""
    if amp == "off":
        return Precision(None, False, "AMP off (requested)")
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return Precision(torch.float16, True, "fp16 autocast + grad scaler on CUDA")
        return Precision(torch.bfloat16, False, "bf16 autocast on CUDA")
    if amp in ("bf16", "on"):
        return Precision(torch.bfloat16, False, "bf16 autocast on CPU (forced)")
    if amp == "fp16":
        return Precision(torch.float16, False, "fp16 autocast on CPU (forced)")
    if cpu_has_native_bf16():
        return Precision(torch.bfloat16, False, "bf16 autocast (CPU has native bf16)")
    return Precision(None, False, "AMP off: this CPU has no native bf16 (AVX2 only); "
                     "bf16 would run several times slower. Force with --amp bf16")


def choose_compile(device: torch.device, compile_flag: str = "auto") -> tuple[bool, str]:
    """``compile_flag``: 'auto' | 'on' | 'off'. Auto compiles on CUDA only: on 2-core CPUs it
    gained 1.0-1.4x for 20-80 s of cold compile, which short runs never earn back."""
    if compile_flag == "on":
        return True, "torch.compile on (requested)"
    if compile_flag == "off":
        return False, "torch.compile off (requested)"
    if device.type == "cuda":
        return True, "torch.compile on (CUDA)"
    return False, "torch.compile off on CPU (little gain for its compile time; --compile on)"


def choose_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
