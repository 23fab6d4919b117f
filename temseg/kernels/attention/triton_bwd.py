"""FlashAttention-2 style backward kernels (non-causal) and their launcher.

Three launches, no atomics:

1. ``attn_bwd_preprocess``: ``delta = rowsum(dO * O)`` (B, H, N) fp32.
2. ``attn_bwd_dkdv``: one program per BLOCK_N keys of one (batch, head); streams Q, dO, lse,
   delta in BLOCK_M tiles, recomputes ``P^T = exp(scale * K Q^T - lse)`` and accumulates
   ``dV = P^T dO`` and ``dK = scale * dS^T Q`` with ``dS = P * (dO V^T - delta)``.
3. ``attn_bwd_dq``: one program per BLOCK_M queries; streams K, V in BLOCK_N tiles and
   accumulates ``dQ = scale * dS K``.

Only q, k, v, o and lse are needed (the (N, N) probabilities are recomputed). Rows and columns
past N are masked (loads return 0 and the recomputed probabilities are forced to 0).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._backend import check_launch
from .configs import PREPROCESS_BLOCK_M, PREPROCESS_WARPS
from .triton_fwd import INTERPRETED, LOG2E, autotuned, block_d, dot_precision


@triton.jit
def attn_bwd_preprocess(
    Out, DO, Delta,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_db, stride_dh, stride_dn, stride_dd,
    H, N,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Delta[b, h, n] = sum_d Out[b, h, n, d] * dO[b, h, n, d] in fp32.

    Out, DO: (B, H, N, HEAD_DIM); Delta: (B, H, N) fp32 contiguous. Grid: (cdiv(N, BLOCK_M), B*H).
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
                + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(DO + b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh
                 + offs_m[:, None] * stride_dn + offs_d[None, :] * stride_dd, mask=mask,
                 other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(Delta + pid_bh.to(tl.int64) * N + offs_m, delta, mask=offs_m < N)


@triton.jit
def attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, Delta, DK, DV,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_db, stride_dh, stride_dn, stride_dd,
    H, N, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK, dV for one BLOCK_N tile of keys of one (batch, head).

    Q, K, V, DO: (B, H, N, HEAD_DIM) (any strides, DO strides given); LSE, Delta: (B, H, N)
    fp32 contiguous (natural-log lse); DK, DV: (B, H, N, HEAD_DIM) contiguous, dtype of K.
    ``qk_scale = sm_scale * log2(e)``. Grid: (cdiv(N, BLOCK_N), B * H).
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N
    mask_d = offs_d < HEAD_DIM
    mask_nd = mask_n[:, None] & mask_d[None, :]

    k = tl.load(K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
                + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask_nd,
                other=0.0)
    v = tl.load(V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
                + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask_nd,
                other=0.0)
    # Q^T tile (BLOCK_D, BLOCK_M) and dO tile (BLOCK_M, BLOCK_D), advanced along N.
    qt_ptrs = (Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
               + offs_m[None, :] * stride_qn + offs_d[:, None] * stride_qd)
    do_ptrs = (DO + b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh
               + offs_m[:, None] * stride_dn + offs_d[None, :] * stride_dd)
    lse_ptrs = LSE + pid_bh.to(tl.int64) * N + offs_m
    delta_ptrs = Delta + pid_bh.to(tl.int64) * N + offs_m

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(0, N, BLOCK_M):
        mask_m = (start_m + offs_m) < N
        qt = tl.load(qt_ptrs + start_m * stride_qn, mask=mask_d[:, None] & mask_m[None, :],
                     other=0.0)
        do = tl.load(do_ptrs + start_m * stride_dn, mask=mask_m[:, None] & mask_d[None, :],
                     other=0.0)
        lse2 = tl.load(lse_ptrs + start_m, mask=mask_m, other=0.0) * 1.4426950408889634
        delta = tl.load(delta_ptrs + start_m, mask=mask_m, other=0.0)
        qkt = tl.dot(k, qt, input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(qkt * qk_scale - lse2[None, :])
        pt = tl.where(mask_m[None, :], pt, 0.0)
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PRECISION)
    dk = dk * sm_scale

    out_off = (pid_bh.to(tl.int64) * N * HEAD_DIM + offs_n[:, None] * HEAD_DIM
               + offs_d[None, :])
    tl.store(DK + out_off, dk.to(DK.dtype.element_ty), mask=mask_nd)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=mask_nd)


@triton.jit
def attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, Delta, DQ,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_db, stride_dh, stride_dn, stride_dd,
    H, N, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dQ for one BLOCK_M tile of queries of one (batch, head).

    Shapes as :func:`attn_bwd_dkdv_kernel`; DQ: (B, H, N, HEAD_DIM) contiguous, dtype of Q.
    Grid: (cdiv(N, BLOCK_M), B * H).
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    mask_d = offs_d < HEAD_DIM
    mask_md = mask_m[:, None] & mask_d[None, :]

    q = tl.load(Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
                + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=mask_md,
                other=0.0)
    do = tl.load(DO + b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh
                 + offs_m[:, None] * stride_dn + offs_d[None, :] * stride_dd, mask=mask_md,
                 other=0.0)
    lse2 = tl.load(LSE + pid_bh.to(tl.int64) * N + offs_m, mask=mask_m, other=0.0)
    lse2 = lse2 * 1.4426950408889634
    delta = tl.load(Delta + pid_bh.to(tl.int64) * N + offs_m, mask=mask_m, other=0.0)
    # K^T and V^T tiles (BLOCK_D, BLOCK_N), advanced along N.
    kt_ptrs = (K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
               + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd)
    vt_ptrs = (V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
               + offs_n[None, :] * stride_vn + offs_d[:, None] * stride_vd)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        mask_n = (start_n + offs_n) < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        kt = tl.load(kt_ptrs + start_n * stride_kn, mask=mask_dn, other=0.0)
        vt = tl.load(vt_ptrs + start_n * stride_vn, mask=mask_dn, other=0.0)
        qk = tl.dot(q, kt, input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        p = tl.where(mask_n[None, :], p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)
    dq = dq * sm_scale

    out_off = (pid_bh.to(tl.int64) * N * HEAD_DIM + offs_m[:, None] * HEAD_DIM
               + offs_d[None, :])
    tl.store(DQ + out_off, dq.to(DQ.dtype.element_ty), mask=mask_md)


attn_bwd_dkdv = autotuned(attn_bwd_dkdv_kernel, "bwd_kv")
attn_bwd_dq = autotuned(attn_bwd_dq_kernel, "bwd_q")


def flash_attn_bwd_triton(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the three backward kernels.

    Args:
        do: (B, H, N, D) upstream gradient of o (any strides).
        q, k, v, o: (B, H, N, D) as in the forward; lse: (B, H, N) fp32 from the forward.
        scale: softmax scale used in the forward (default 1/sqrt(D)).

    Returns:
        dq, dk, dv: (B, H, N, D) contiguous, dtypes of q, k, v.
    """
    check_launch(q.device, INTERPRETED)
    bsz, heads, n_tok, head_dim = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    dq = torch.empty((bsz, heads, n_tok, head_dim), dtype=q.dtype, device=q.device)
    dk = torch.empty((bsz, heads, n_tok, head_dim), dtype=k.dtype, device=q.device)
    dv = torch.empty((bsz, heads, n_tok, head_dim), dtype=v.dtype, device=q.device)
    if n_tok == 0 or bsz * heads == 0:
        return dq, dk, dv
    do = do.to(q.dtype)
    lse = lse.contiguous()
    bd = block_d(head_dim)
    precision = dot_precision(q.dtype)
    delta = torch.empty((bsz, heads, n_tok), dtype=torch.float32, device=q.device)
    attn_bwd_preprocess[(triton.cdiv(n_tok, PREPROCESS_BLOCK_M), bsz * heads)](
        o, do, delta, *o.stride(), *do.stride(), heads, n_tok,
        HEAD_DIM=head_dim, BLOCK_D=bd, BLOCK_M=PREPROCESS_BLOCK_M, num_warps=PREPROCESS_WARPS,
    )
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    attn_bwd_dkdv[lambda meta: (triton.cdiv(n_tok, meta["BLOCK_N"]), bsz * heads)](
        q, k, v, do, lse, delta, dk, dv, *strides, heads, n_tok, scale, scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_D=bd, PRECISION=precision,
    )
    attn_bwd_dq[lambda meta: (triton.cdiv(n_tok, meta["BLOCK_M"]), bsz * heads)](
        q, k, v, do, lse, delta, dq, *strides, heads, n_tok, scale, scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_D=bd, PRECISION=precision,
    )
    return dq, dk, dv
