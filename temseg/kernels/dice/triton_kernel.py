"""Fused soft-Dice + cross-entropy statistics: forward and backward Triton kernels.

Imported lazily (only when a Triton path runs): importing this module imports Triton.

Forward (:func:`dice_ce_fwd_kernel`): one pass over the logits. Each program owns one sample
and a strided set of BLOCK_P-pixel tiles; per tile it loads the (C_PAD, BLOCK_P) logits, takes
the softmax over classes in registers, compares with the target labels, and adds per-class
``inter``, ``psum``, ``gsum`` and the CE sum to fp32 accumulators. Each program writes one row
of partial sums to a small workspace (B, SPLIT, 4, C_PAD) which the host sums over SPLIT: the
result is deterministic (no atomics) and neither softmax nor one-hot is written to memory.

Backward (:func:`dice_ce_bwd_kernel`): recomputes the softmax per pixel from the logits and
combines the upstream gradients of inter/psum (B, C) and ce (B,):
``g_c = dinter[b, c] * [t == c] + dpsum[b, c]``,
``dlogit_k = p_k * (g_k - sum_j p_j g_j) + dce[b] * (p_k - [t == k])``.

Target values outside [0, C) (undefined for the reference, whose ``one_hot`` raises) match no
class and add no CE term; their probabilities still count in ``psum``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backend import check_launch, interpreting
from .configs import INTERPRET, DiceConfig, all_configs, c_pad, configs_for

INTERPRETED = interpreting()


def _autotuned(kernel, kind: str):
    """Wrap a @triton.jit Dice kernel in its autotuner (keys: H*W, C and the dtypes); the
    pruning hook keeps the configs of ``configs.TABLE`` for the call's C_PAD."""

    def prune(configs, named_args, **kwargs):
        keep = set(configs_for(kind, kwargs["C_PAD"]))
        return [c for c in configs
                if DiceConfig(c.kwargs["BLOCK_P"], c.num_warps, c.num_stages) in keep]

    table = [INTERPRET[kind]] if INTERPRETED else all_configs(kind)
    return triton.autotune(
        configs=[triton.Config({"BLOCK_P": c.block_p}, num_warps=c.num_warps,
                               num_stages=c.num_stages) for c in table],
        key=["HW", "C"],
        prune_configs_by=None if INTERPRETED else {"early_config_prune": prune},
    )(kernel)


@triton.jit
def _softmax_tile(X, T, x_base, t_base, pix, offs_c, C, HW, stride_xc, stride_xp):
    """Load one (C_PAD, BLOCK_P) logits tile and its labels; softmax over classes in fp32.

    Returns (p, onehot, valid_t, x, m, s): probabilities (0 on padded classes and pixels),
    one-hot mask, "pixel in range with a label in [0, C)" mask, fp32 logits (-inf on padded
    classes), per-pixel max and exp-sum.
    """
    mask_c = offs_c < C
    mask_p = pix < HW
    x = tl.load(X + x_base + offs_c[:, None] * stride_xc + pix[None, :] * stride_xp,
                mask=mask_c[:, None] & mask_p[None, :], other=0.0).to(tl.float32)
    x = tl.where(mask_c[:, None], x, float("-inf"))
    t = tl.load(T + t_base + pix, mask=mask_p, other=-1).to(tl.int32)
    m = tl.max(x, axis=0)
    e = tl.math.exp2((x - m[None, :]) * 1.4426950408889634)
    s = tl.sum(e, axis=0)
    p = e / s[None, :]
    p = tl.where(mask_p[None, :], p, 0.0)
    valid_t = (t >= 0) & (t < C)  # padded pixels carry t = -1
    onehot = (offs_c[:, None] == t[None, :]) & valid_t[None, :]
    return p, onehot, valid_t, x, m, s


@triton.jit
def dice_ce_fwd_kernel(
    X, T, WS,
    stride_xb, stride_xc, stride_xp, stride_tb,
    C, HW, SPLIT,
    C_PAD: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Partial per-class sums of one (sample, split) program.

    X: (B, C, HW) logits fp32/fp16/bf16 (strides given; pixel stride ``stride_xp``);
    T: (B, HW) integer labels (pixel stride 1); WS: (B, SPLIT, 4, C_PAD) fp32 contiguous,
    rows 0..3 = inter, psum, gsum, [ce, 0, ...]. Grid: (SPLIT, B).
    """
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_c = tl.arange(0, C_PAD)
    offs_p = tl.arange(0, BLOCK_P)
    x_base = b.to(tl.int64) * stride_xb
    t_base = b.to(tl.int64) * stride_tb

    inter = tl.zeros([C_PAD], dtype=tl.float32)
    psum = tl.zeros([C_PAD], dtype=tl.float32)
    gsum = tl.zeros([C_PAD], dtype=tl.float32)
    ce = tl.zeros([BLOCK_P], dtype=tl.float32)
    n_tiles = tl.cdiv(HW, BLOCK_P)
    for tile in range(pid_s, n_tiles, SPLIT):
        pix = tile * BLOCK_P + offs_p
        p, onehot, valid_t, x, m, s = _softmax_tile(X, T, x_base, t_base, pix, offs_c, C, HW,
                                                    stride_xc, stride_xp)
        inter += tl.sum(tl.where(onehot, p, 0.0), axis=1)
        psum += tl.sum(p, axis=1)
        gsum += tl.sum(tl.where(onehot, 1.0, 0.0), axis=1)
        x_t = tl.sum(tl.where(onehot, x, 0.0), axis=0)
        lse = m + tl.math.log2(s) * 0.6931471805599453
        ce += tl.where(valid_t, lse - x_t, 0.0)

    ce_total = tl.sum(ce, axis=0)
    ws = WS + (b.to(tl.int64) * SPLIT + pid_s) * 4 * C_PAD + offs_c
    tl.store(ws, inter)
    tl.store(ws + C_PAD, psum)
    tl.store(ws + 2 * C_PAD, gsum)
    tl.store(ws + 3 * C_PAD, tl.where(offs_c == 0, ce_total, 0.0))


@triton.jit
def dice_ce_bwd_kernel(
    X, T, GI, GP, GCE, DX,
    stride_xb, stride_xc, stride_xp, stride_tb,
    C, HW,
    C_PAD: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Gradient w.r.t. the logits of one BLOCK_P tile of one sample.

    X, T as in :func:`dice_ce_fwd_kernel`; GI, GP: (B, C) fp32 contiguous upstream gradients
    of inter and psum; GCE: (B,) fp32 upstream gradient of ce; DX: (B, C, HW) contiguous, dtype
    of X. Grid: (cdiv(HW, BLOCK_P), B).
    """
    tile = tl.program_id(0)
    b = tl.program_id(1)
    offs_c = tl.arange(0, C_PAD)
    mask_c = offs_c < C
    pix = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    p, onehot, valid_t, x, m, s = _softmax_tile(X, T, b.to(tl.int64) * stride_xb,
                                                b.to(tl.int64) * stride_tb, pix, offs_c, C, HW,
                                                stride_xc, stride_xp)
    gi = tl.load(GI + b * C + offs_c, mask=mask_c, other=0.0)
    gp = tl.load(GP + b * C + offs_c, mask=mask_c, other=0.0)
    gce = tl.load(GCE + b)
    g = tl.where(onehot, gi[:, None], 0.0) + gp[:, None]
    pg = tl.sum(p * g, axis=0)
    dce = tl.where(valid_t[None, :], p - tl.where(onehot, 1.0, 0.0), 0.0)
    dx = p * (g - pg[None, :]) + gce * dce
    dx_ptrs = DX + b.to(tl.int64) * C * HW + offs_c[:, None] * HW + pix[None, :]
    tl.store(dx_ptrs, dx.to(DX.dtype.element_ty), mask=mask_c[:, None] & (pix < HW)[None, :])


dice_ce_fwd = _autotuned(dice_ce_fwd_kernel, "fwd")
dice_ce_bwd = _autotuned(dice_ce_bwd_kernel, "bwd")


def _flat_views(logits: torch.Tensor, target: torch.Tensor):
    """(B, C, H, W) logits -> (tensor, stride_b, stride_c, stride_pixel) without a copy when
    H and W can be flattened (contiguous and channels_last both can); labels made contiguous."""
    if logits.stride(-2) != logits.shape[-1] * logits.stride(-1) and logits.shape[-2] > 1:
        logits = logits.contiguous()
    target = target.contiguous()
    return logits, target, (logits.stride(0), logits.stride(1), logits.stride(-1),
                            target[0].numel())


def _split(batch: int, hw: int, device: torch.device) -> int:
    """Programs per sample of the forward reduction: enough to fill the GPU (~4 per SM)."""
    if device.type == "cuda":
        target_programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # interpreter: a few, so that the strided tile loop is exercised
        target_programs = 4
    return max(1, min(triton.cdiv(target_programs, batch), triton.cdiv(hw, 128)))


def dice_ce_stats_triton(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel version of ``dice_ce_stats_reference``.

    Args:
        logits: (B, C, H, W) fp32/fp16/bf16. target: (B, H, W) integer labels.

    Returns:
        inter, psum, gsum: (B, C) fp32; ce: (B,) fp32.
    """
    check_launch(logits.device, INTERPRETED)
    bsz, num_classes, height, width = logits.shape
    hw = height * width
    cp = c_pad(num_classes)
    dev = logits.device
    if bsz == 0 or hw == 0:
        z = torch.zeros((bsz, num_classes), dtype=torch.float32, device=dev)
        return z, z.clone(), z.clone(), torch.zeros((bsz,), dtype=torch.float32, device=dev)
    x, t, strides = _flat_views(logits, target)
    split = _split(bsz, hw, dev)
    ws = torch.empty((bsz, split, 4, cp), dtype=torch.float32, device=dev)
    dice_ce_fwd[(split, bsz)](x, t, ws, *strides, num_classes, hw, split, C_PAD=cp)
    tot = ws.sum(dim=1)  # (B, 4, C_PAD); separate tensors (custom-op outputs must not alias)
    return (tot[:, 0, :num_classes].clone(), tot[:, 1, :num_classes].clone(),
            tot[:, 2, :num_classes].clone(), tot[:, 3, 0].clone())


def dice_ce_stats_backward_triton(
    logits: torch.Tensor,
    target: torch.Tensor,
    grad_inter: torch.Tensor,
    grad_psum: torch.Tensor,
    grad_ce: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``sum(grad_inter * inter + grad_psum * psum + grad_ce * ce)`` w.r.t. logits.

    Args:
        logits: (B, C, H, W); target: (B, H, W); grad_inter, grad_psum: (B, C); grad_ce: (B,).

    Returns:
        (B, C, H, W) contiguous, dtype of logits.
    """
    check_launch(logits.device, INTERPRETED)
    bsz, num_classes, height, width = logits.shape
    hw = height * width
    dx = torch.empty((bsz, num_classes, height, width), dtype=logits.dtype, device=logits.device)
    if dx.numel() == 0:
        return dx
    x, t, strides = _flat_views(logits, target)
    gi = grad_inter.to(torch.float32).contiguous()
    gp = grad_psum.to(torch.float32).contiguous()
    gce = grad_ce.to(torch.float32).contiguous()
    dice_ce_bwd[lambda meta: (triton.cdiv(hw, meta["BLOCK_P"]), bsz)](
        x, t, gi, gp, gce, dx, *strides, num_classes, hw, C_PAD=c_pad(num_classes),
    )
    return dx
