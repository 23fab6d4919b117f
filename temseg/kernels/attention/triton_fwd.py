"""FlashAttention-2 style forward kernel (non-causal) and its launcher.

Imported lazily (only when a Triton path runs): importing this module imports Triton, and
``@triton.jit`` reads ``TRITON_INTERPRET`` here.

Per program: a BLOCK_M tile of queries of one (batch, head); K and V are streamed in BLOCK_N
tiles with the online softmax (running max ``m`` and running sum ``l`` kept in fp32, in base 2:
scores are pre-multiplied by ``scale * log2(e)`` so that ``exp2`` is used). Full K/V tiles run
without masks; the ragged last tile (``N % BLOCK_N != 0``) runs once with a column mask. The
natural-log log-sum-exp ``lse = log(sum_j exp(scale * q.k_j))`` of each row is stored for the
backward pass (B, H, N) fp32, so the (N, N) probability matrix is never stored.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._backend import check_launch, interpreting
from .configs import INTERPRET, KernelConfig, all_configs, arch_of, configs_for

INTERPRETED = interpreting()
LOG2E = 1.4426950408889634


def _triton_configs(kind: str) -> list[triton.Config]:
    """The autotuner's list: every GPU config of ``kind``, or the single interpreter one."""
    table = [INTERPRET[kind]] if INTERPRETED else all_configs(kind)
    return [
        triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n}, num_warps=c.num_warps,
                      num_stages=c.num_stages)
        for c in table
    ]


def _prune(kind: str):
    """``early_config_prune`` hook: keep the configs of :data:`configs.TABLE` for the call's
    head dim, input element size and GPU generation."""

    def prune(configs, named_args, **kwargs):
        q = named_args["Q"]
        arch = arch_of(torch.cuda.get_device_capability(q.device))
        keep = set(configs_for(kind, kwargs["HEAD_DIM"], q.element_size(), arch))
        return [c for c in configs
                if KernelConfig(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
                                c.num_stages) in keep]

    return prune


def autotuned(kernel, kind: str):
    """Wrap a @triton.jit attention kernel in its autotuner (keys: N, HEAD_DIM, dtypes)."""
    return triton.autotune(
        configs=_triton_configs(kind),
        key=["N", "HEAD_DIM"],
        prune_configs_by=None if INTERPRETED else {"early_config_prune": _prune(kind)},
    )(kernel)


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` of the dots for fp32 inputs (16-bit inputs ignore it): ``"ieee"``
    under the interpreter (tf32 is not emulated), ``"tf32"`` tensor cores on GPU (the
    dispatcher only sends fp32 to the kernel on GPU when torch allows tf32 matmuls, or when
    ``backend="triton"`` is forced; ``"ieee"`` FMA dots and ``"tf32x3"`` spill registers at
    these tile sizes)."""
    if dtype == torch.float32 and not INTERPRETED:
        return "tf32"
    return "ieee"


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, k_ptrs, v_ptrs, start_n, N, offs_n, offs_d, mask_d,
              stride_kn, stride_vn, qk_scale, PRECISION: tl.constexpr, MASK_N: tl.constexpr,
              EVEN_D: tl.constexpr):
    """One K/V tile of the online softmax; returns the updated (acc, m_i, l_i)."""
    cols = start_n + offs_n
    if MASK_N:
        mask_n = cols < N
        if EVEN_D:
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=mask_n[None, :], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=mask_n[:, None], other=0.0)
        else:
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=mask_n[None, :] & mask_d[:, None],
                         other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=mask_n[:, None] & mask_d[None, :],
                        other=0.0)
    else:
        if EVEN_D:
            kt = tl.load(k_ptrs + start_n * stride_kn)
            v = tl.load(v_ptrs + start_n * stride_vn)
        else:
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=mask_d[:, None], other=0.0)
            v = tl.load(v_ptrs + start_n * stride_vn, mask=mask_d[None, :], other=0.0)
    qk = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
    if MASK_N:
        qk = tl.where(mask_n[None, :], qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
    return acc, m_new, l_i


@triton.jit
def attn_fwd_kernel(
    Q, K, V, Out, LSE,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Out[b, h] = softmax(Q K^T * scale) V and LSE[b, h] for one BLOCK_M tile of queries.

    Q, K, V, Out: (B, H, N, HEAD_DIM) fp32/fp16/bf16 (any strides); LSE: (B, H, N) fp32
    contiguous. ``qk_scale = scale * log2(e)``. BLOCK_D = max(16, next_pow2(HEAD_DIM)).
    Grid: (cdiv(N, BLOCK_M), B * H).
    """
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    mask_d = offs_d < HEAD_DIM

    q_ptrs = (Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
              + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd)
    # K is read transposed, (BLOCK_D, BLOCK_N), so that the first dot is q @ kt.
    k_ptrs = (K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
              + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd)
    v_ptrs = (V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
              + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd)
    if EVEN_D:
        q = tl.load(q_ptrs, mask=mask_m[:, None], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    n_full = (N // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_ptrs, v_ptrs, start_n, N, offs_n, offs_d,
                                  mask_d, stride_kn, stride_vn, qk_scale, PRECISION, False,
                                  EVEN_D)
    if n_full < N:
        acc, m_i, l_i = _fwd_tile(acc, m_i, l_i, q, k_ptrs, v_ptrs, n_full, N, offs_n, offs_d,
                                  mask_d, stride_kn, stride_vn, qk_scale, PRECISION, True,
                                  EVEN_D)

    acc = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # back to natural log
    tl.store(LSE + pid_bh.to(tl.int64) * N + offs_m, lse, mask=mask_m)
    o_ptrs = (Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
              + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od)
    if EVEN_D:
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=mask_m[:, None])
    else:
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


attn_fwd = autotuned(attn_fwd_kernel, "fwd")


def block_d(head_dim: int) -> int:
    """Head-dim tile: the next power of two, at least 16 (tl.dot's minimum K)."""
    return max(16, triton.next_power_of_2(head_dim))


def flash_attn_fwd_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    Args:
        q, k, v: (B, H, N, D) fp32/fp16/bf16, same dtype and device, D <= 128.
        scale: softmax scale (default 1/sqrt(D)).

    Returns:
        o: (B, H, N, D) dtype of q, contiguous; lse: (B, H, N) fp32 natural-log log-sum-exp.
    """
    check_launch(q.device, INTERPRETED)
    bsz, heads, n_tok, head_dim = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    o = torch.empty((bsz, heads, n_tok, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((bsz, heads, n_tok), dtype=torch.float32, device=q.device)
    if n_tok == 0 or bsz * heads == 0:
        return o, lse

    def grid(meta):
        return (triton.cdiv(n_tok, meta["BLOCK_M"]), bsz * heads)

    attn_fwd[grid](
        q, k, v, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        heads, n_tok, scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_D=block_d(head_dim), PRECISION=dot_precision(q.dtype),
    )
    return o, lse
