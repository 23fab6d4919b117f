"""Device, mixed-precision and compile policy, decided at run time from the hardware."""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return " avx512_bf16" in flags or " amx_bf16" in flags
    return False


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(reps: int = 5) -> float:
    """Measured speed of bf16 autocast relative to fp32 for a conv forward + backward of the
    model's kind on this CPU (> 1: bf16 is faster). Takes well under a second.

    The cpuinfo flag alone does not settle it: on AVX2-only CPUs bf16 runs 5-10x slower than
    fp32, and on an AVX512-BF16 EPYC here it ran anywhere from 0.8x to 2x the fp32 speed
    depending on shapes and thread count, so the choice is measured, not assumed.
    """
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, padding=1),
                               torch.nn.Conv2d(32, 32, 3, padding=1))
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(4, 32, 64, 64).contiguous(memory_format=torch.channels_last)

    def once(dtype: torch.dtype | None) -> float:
        t = time.perf_counter()
        ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            y = conv(x)
        y.float().sum().backward()
        return time.perf_counter() - t

    once(None), once(torch.bfloat16)  # warm-up (oneDNN primitive creation)
    fp32, bf16 = float("inf"), float("inf")
    for _ in range(reps):  # interleaved, best of each: robust to load from other processes
        fp32, bf16 = min(fp32, once(None)), min(bf16, once(torch.bfloat16))
    return fp32 / bf16


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
    if not cpu_has_native_bf16():
        return Precision(None, False, "AMP off: this CPU has no native bf16 units (AVX2 only), "
                         "where bf16 runs several times slower; force with --amp bf16")
    speedup = cpu_bf16_speedup()
    if speedup > 1.1:
        return Precision(torch.bfloat16, False,
                         f"bf16 autocast: measured {speedup:.1f}x faster than fp32 on this CPU")
    return Precision(None, False, f"AMP off: this CPU advertises bf16 but bf16 convolutions ran "
                     f"{speedup:.2f}x the speed of fp32 here; force with --amp bf16")


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
