"""Roofline inputs measured in the same run: this CPU's fp32 GEMM rate (torch.mm, i.e. the
BLAS torch links, and NumPy's BLAS), its bf16 GEMM rate where it has bf16 units, its int8
GEMM rate (``torch._int_mm``, int32 accumulation) where it has VNNI, and the
model's counted FLOPs per pixel (the summary relates them to whole-slide inference's MPix/s,
against the faster fp32 GEMM, or the bf16 one for contenders running in bf16)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from temseg.policy import cpu_has_native_bf16, cpu_has_vnni

from .contenders import BenchConfig, annotate
from .roofline import flop_breakdown


def test_gemm_rate(benchmark, bench_cfg: BenchConfig, net: torch.nn.Module) -> None:
    n = bench_cfg.gemm_n
    ops = flop_breakdown(net, bench_cfg.tile)
    a, b = torch.randn(n, n), torch.randn(n, n)
    annotate(benchmark, f"roofline: fp32 GEMM {n}x{n}, {bench_cfg.threads} threads",
             "torch.mm", unit="GFLOP/s", work=2 * n**3 / 1e9,
             flops_per_pixel=sum(ops.values()) / bench_cfg.tile**2, flops_by_op=ops,
             model_width=bench_cfg.width, tile=bench_cfg.tile)
    benchmark.pedantic(torch.mm, args=(a, b), rounds=10, iterations=1, warmup_rounds=2)


def test_gemm_rate_numpy(benchmark, bench_cfg: BenchConfig) -> None:
    """The same GEMM through NumPy's BLAS (OpenBLAS in the wheels), whose thread count cannot
    be set after import: measured only where its default (all CPUs) is the benchmark's."""
    if (os.cpu_count() or 1) != bench_cfg.threads:
        pytest.skip(f"NumPy's BLAS would use {os.cpu_count()} threads, the benchmark uses "
                    f"{bench_cfg.threads}")
    n = bench_cfg.gemm_n
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    annotate(benchmark, f"roofline: fp32 GEMM {n}x{n}, {bench_cfg.threads} threads",
             "numpy.matmul", unit="GFLOP/s", work=2 * n**3 / 1e9)
    benchmark.pedantic(np.matmul, args=(a, b), rounds=10, iterations=1, warmup_rounds=2)


def test_gemm_rate_bf16(benchmark, bench_cfg: BenchConfig) -> None:
    """The roof of the bf16 inference path (torch.mm on bf16, fp32 accumulation in oneDNN)."""
    if not cpu_has_native_bf16():
        pytest.skip("no native bf16 on this CPU: temseg never runs bf16 here")
    n = bench_cfg.gemm_n
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    annotate(benchmark, f"roofline: bf16 GEMM {n}x{n}, {bench_cfg.threads} threads",
             "torch.mm", unit="GFLOP/s", work=2 * n**3 / 1e9)
    benchmark.pedantic(torch.mm, args=(a, b), rounds=10, iterations=1, warmup_rounds=2)


def test_gemm_rate_int8(benchmark, bench_cfg: BenchConfig) -> None:
    """The roof of the int8 path: ``torch._int_mm`` (int8 x int8 -> int32, oneDNN's VNNI /
    AMX-INT8 kernels)."""
    if not cpu_has_vnni():
        pytest.skip("no VNNI on this CPU: temseg never runs int8 here")
    n = bench_cfg.gemm_n
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-128, 127, (n, n), dtype=torch.int8, generator=gen) for _ in range(2))
    annotate(benchmark, f"roofline: int8 GEMM {n}x{n}, {bench_cfg.threads} threads",
             "torch._int_mm", unit="GFLOP/s", work=2 * n**3 / 1e9)
    benchmark.pedantic(torch._int_mm, args=(a, b), rounds=10, iterations=1, warmup_rounds=2)
