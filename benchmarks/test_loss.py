"""Soft-Dice + cross-entropy loss, forward+backward: the baseline (one-hot and separate
tensors) vs temseg's DiceCELoss vs MONAI's DiceCELoss, all with the training settings (batch
Dice, lambda_dice 0.5, softmax of logits, one-hot of integer targets).

On the CPU temseg's loss runs its PyTorch reference; its Triton kernel is timed only where
CUDA is present (:func:`test_loss_triton`).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from .contenders import CUDA_SKIP, BenchConfig, annotate, loss_impls, loss_inputs
from .peak_memory import measure as peak_memory

IMPLS = list(loss_impls())
BASELINE = IMPLS[0]


def _fwd_bwd(f: Callable[..., torch.Tensor], logits: torch.Tensor,
             target: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        logits.grad = None
        f(logits, target).backward()
    return run


def _measure(cfg: BenchConfig, suffix: str = "") -> str:
    return (f"loss forward+backward {cfg.loss_batch}x5x{cfg.loss_size}x{cfg.loss_size}"
            f"{suffix}")


@pytest.mark.parametrize("impl", IMPLS)
def test_loss(benchmark, bench_cfg: BenchConfig, impl: str) -> None:
    logits, target = loss_inputs(bench_cfg.loss_batch, bench_cfg.loss_size)
    mem = peak_memory({"measure": "loss", "contender": impl, "config": bench_cfg.to_dict()})
    value = float(loss_impls()[impl](logits, target).detach())
    annotate(benchmark, _measure(bench_cfg), impl, baseline=impl == BASELINE,
             loss_value=value, **mem)
    # many cheap rounds after a few warm-up ones: the first calls pay page faults until
    # malloc's mmap threshold has adapted to these ~10 MB tensors (whichever runs first)
    benchmark.pedantic(_fwd_bwd(loss_impls()[impl], logits, target), rounds=15, iterations=1,
                       warmup_rounds=3)


@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_loss_triton(benchmark, bench_cfg: BenchConfig, impl: str) -> None:
    """temseg's fused Triton loss kernel vs its PyTorch reference (CUDA only)."""
    if not torch.cuda.is_available():
        pytest.skip(CUDA_SKIP)
    from temseg.kernels import dice_ce_loss, dice_ce_loss_reference

    logits, target = (t.detach().cuda() for t in loss_inputs(bench_cfg.loss_batch,
                                                              bench_cfg.loss_size))
    logits.requires_grad_(True)
    kw = {"batch": True, "lambda_dice": 0.5}
    if impl == "triton":
        def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return dice_ce_loss(x, y, backend="triton", **kw)
    else:
        def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return dice_ce_loss_reference(x, y, **kw)
    run = _fwd_bwd(f, logits, target)

    def synced() -> None:
        run()
        torch.cuda.synchronize()

    annotate(benchmark, _measure(bench_cfg, " (CUDA)"),
             "temseg Triton kernel" if impl == "triton" else "temseg PyTorch reference",
             baseline=impl == "reference")
    benchmark.pedantic(synced, rounds=20, iterations=1, warmup_rounds=3)
