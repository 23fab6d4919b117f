"""Bottleneck attention, forward and forward+backward: the baseline's explicit
softmax(QK^T)V vs temseg's attention vs ``F.scaled_dot_product_attention``.

On the CPU temseg's attention runs its PyTorch path, which is SDPA, so it has no row of its
own there; it and its Triton kernel are timed only where CUDA is present
(:func:`test_attention_triton`).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from .contenders import CUDA_SKIP, BenchConfig, annotate, attention_impls, attention_inputs
from .peak_memory import measure as peak_memory

CFG = BenchConfig.from_env()
IMPLS = list(attention_impls())
BASELINE = IMPLS[0]
PASSES = ("forward", "forward+backward")


def _case_id(case: tuple[int, int]) -> str:
    return f"B{case[0]}-N{case[1]}"


def _run(f: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         g: torch.Tensor, backward: bool) -> Callable[[], None]:
    if not backward:
        def fwd() -> None:
            with torch.no_grad():
                f(q, k, v)
        return fwd

    def fwd_bwd() -> None:
        q.grad = k.grad = v.grad = None
        f(q, k, v).backward(g)
    return fwd_bwd


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("case", CFG.attn_cases, ids=_case_id)
def test_attention(benchmark, bench_cfg: BenchConfig, case: tuple[int, int], pass_: str,
                   impl: str) -> None:
    batch, tokens = case
    backward = pass_ == "forward+backward"
    q, k, v, g = attention_inputs(batch, tokens, bench_cfg.attn_heads, bench_cfg.attn_head_dim,
                                  requires_grad=backward)
    extra = {}
    if backward:  # the forward+backward peak bounds the forward's
        extra = peak_memory({"measure": "attention", "contender": impl, "batch": batch,
                             "tokens": tokens, "config": bench_cfg.to_dict()})
    measure = (f"attention {pass_} B={batch} heads={bench_cfg.attn_heads} N={tokens} "
               f"d={bench_cfg.attn_head_dim}")
    annotate(benchmark, measure, impl, baseline=impl == BASELINE, **extra)
    rounds = bench_cfg.attn_rounds[min(bench_cfg.attn_cases.index(case),
                                       len(bench_cfg.attn_rounds) - 1)]
    benchmark.pedantic(_run(attention_impls()[impl], q, k, v, g, backward), rounds=rounds,
                       iterations=1, warmup_rounds=1)


def _cuda_inputs(bench_cfg: BenchConfig, case: tuple[int, int], pass_: str):
    """q, k, v, upstream gradient on the GPU, and whether the pass includes backward."""
    batch, tokens = case
    backward = pass_ == "forward+backward"
    q, k, v, g = (t.detach().cuda().requires_grad_(backward and i < 3) for i, t in
                  enumerate(attention_inputs(batch, tokens, bench_cfg.attn_heads,
                                             bench_cfg.attn_head_dim)))
    return q, k, v, g, backward


def _time_cuda(benchmark, run, bench_cfg: BenchConfig, case: tuple[int, int], pass_: str,
               contender: str, baseline: bool = False) -> None:
    """Time ``run`` with a device synchronisation per round, in the CUDA group of ``case``."""

    def synced() -> None:
        run()
        torch.cuda.synchronize()

    batch, tokens = case
    measure = (f"attention {pass_} B={batch} heads={bench_cfg.attn_heads} N={tokens} "
               f"d={bench_cfg.attn_head_dim} (CUDA)")
    annotate(benchmark, measure, contender, baseline=baseline)
    benchmark.pedantic(synced, rounds=20, iterations=1, warmup_rounds=3)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("case", CFG.attn_cases, ids=_case_id)
def test_attention_triton(benchmark, bench_cfg: BenchConfig, case: tuple[int, int],
                          pass_: str) -> None:
    """temseg's Triton flash-attention kernel (CUDA only), against SDPA and the baseline in
    the same group."""
    if not torch.cuda.is_available():
        pytest.skip(CUDA_SKIP)
    from temseg.kernels import attention

    q, k, v, g, backward = _cuda_inputs(bench_cfg, case, pass_)
    torch.set_float32_matmul_precision("high")

    def triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(q, k, v, backend="triton")

    _time_cuda(benchmark, _run(triton, q, k, v, g, backward), bench_cfg, case, pass_,
               "temseg Triton kernel (tf32)")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("case", CFG.attn_cases, ids=_case_id)
def test_attention_cuda_reference(benchmark, bench_cfg: BenchConfig, case: tuple[int, int],
                                  pass_: str, impl: str) -> None:
    """The CPU contenders on the GPU, next to the Triton rows (CUDA only)."""
    if not torch.cuda.is_available():
        pytest.skip(CUDA_SKIP)
    q, k, v, g, backward = _cuda_inputs(bench_cfg, case, pass_)
    _time_cuda(benchmark, _run(attention_impls()[impl], q, k, v, g, backward), bench_cfg,
               case, pass_, impl, baseline=impl == BASELINE)
