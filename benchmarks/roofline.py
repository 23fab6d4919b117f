"""Roofline numbers: the model's FLOPs per pixel (counted) and this CPU's measured GEMM rate.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one tile through
the baseline model (the same network as temseg's, attention written as matmuls: the counter has
no formula for the CPU's fused SDPA op, so counting temseg's module would leave the attention
out). A multiply-add counts as 2 FLOPs; normalisation, activations and softmax are not
counted (they are memory-bound, not FLOPs-bound).

The GEMM rate is the best of a few ``torch.mm`` calls on square fp32 matrices with the
benchmark's thread count: the machine's practical fp32 compute ceiling for these kernels.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def flop_breakdown(net: nn.Module, tile: int = 256) -> dict[str, int]:
    """FLOPs of one (1, 1, tile, tile) forward pass, by aten op."""
    from .baseline import baseline_from

    model = baseline_from(net).eval()
    x = torch.zeros(1, 1, tile, tile)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}


def flops_per_pixel(net: nn.Module, tile: int = 256) -> float:
    """Forward FLOPs per input pixel of ``net`` on ``tile`` x ``tile`` tiles."""
    return sum(flop_breakdown(net, tile).values()) / (tile * tile)


def gemm_gflops(n: int = 2048, threads: int = 2, reps: int = 5) -> float:
    """Best fp32 ``torch.mm`` rate (GFLOP/s) of two n x n matrices on ``threads`` threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    return 2 * n**3 / best / 1e9


if __name__ == "__main__":
    from .contenders import BenchConfig, make_net

    cfg = BenchConfig.from_env()
    print(f"FLOPs/pixel (width {cfg.width}, tile {cfg.tile}): "
          f"{flops_per_pixel(make_net(cfg.width), cfg.tile):,.0f}")
    print(f"GEMM fp32 n={cfg.gemm_n}, {cfg.threads} threads: "
          f"{gemm_gflops(cfg.gemm_n, cfg.threads):.1f} GFLOP/s")
