"""Public loss functions with backend dispatch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._backend import Backend, use_triton
from .configs import MAX_CLASSES
from .op import dice_ce_stats
from .reference import dice_ce_stats_reference, loss_from_stats

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _kernel_unsupported(logits: torch.Tensor, target: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot take these inputs (None when it can)."""
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        return f"need (B, C, H, W) logits and (B, H, W) target, got {logits.shape}, {target.shape}"
    if logits.shape[1] > MAX_CLASSES:
        return f"the kernel takes at most {MAX_CLASSES} classes, got {logits.shape[1]}"
    if logits.dtype not in _KERNEL_DTYPES:
        return f"logits must be fp32/fp16/bf16, got {logits.dtype}"
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        return f"target must hold integer class indices, got {target.dtype}"
    if target.device != logits.device:
        return "logits and target must be on the same device"
    return None


def _stats(logits: torch.Tensor, target: torch.Tensor, backend: Backend,
           weight: torch.Tensor | None = None):
    """(inter, psum, gsum, ce) from the kernel or the reference (``dice_ce_stats_reference``).
    The kernel has no pixel weights: with ``weight`` its CE gets the extra ``(weight - 1)``
    share added from a separate PyTorch cross-entropy."""
    if use_triton(backend, logits):
        why = _kernel_unsupported(logits, target)
        if why is None:
            inter, psum, gsum, ce = dice_ce_stats(logits, target)
            if weight is not None:
                extra = F.cross_entropy(logits.float(), target.long(), reduction="none")
                ce = ce + (extra * (weight - 1)).sum((1, 2)).to(ce.dtype)
            return inter, psum, gsum, ce
        if backend == "triton":
            raise ValueError(f"dice_ce_loss(backend='triton'): {why}")
    return dice_ce_stats_reference(logits, target, weight)


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    lambda_dice: float = 0.5,
    lambda_ce: float = 1.0,
    include_background: bool = True,
    batch: bool = False,
    ignore_empty: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    backend: Backend = "auto",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``lambda_ce * CrossEntropy + lambda_dice * (1 - mean soft-Dice)``.

    Args:
        logits: (B, C, H, W) logits, fp32/fp16/bf16 (fp64 on the torch path).
        target: (B, H, W) integer class indices in [0, C).
        include_background, batch, smooth_nr, smooth_dr: as in ``monai.losses.DiceCELoss``.
        ignore_empty: Dice terms with an empty ground truth are left out of the mean.
        weight: optional (B, H, W) weights of the pixels' cross-entropy (U-Net's weight map;
            the mean is still over B * H * W); the Dice is unweighted.
        backend: ``"auto"`` (Triton on CUDA, PyTorch otherwise and for inputs the kernel does not
            take, e.g. fp64), ``"triton"`` (on CPU tensors needs ``TRITON_INTERPRET=1``) or
            ``"torch"``. ONNX export and ``torch.jit.trace`` always use the reference.

    Returns:
        0-d fp32 tensor (fp64 for fp64 logits).
    """
    inter, psum, gsum, ce = _stats(logits, target, backend, weight)
    return loss_from_stats(
        inter, psum, gsum, ce, target.shape[-2] * target.shape[-1],
        lambda_dice=lambda_dice, lambda_ce=lambda_ce, include_background=include_background,
        batch=batch, ignore_empty=ignore_empty, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
    )


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    include_background: bool = True,
    batch: bool = False,
    ignore_empty: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    backend: Backend = "auto",
) -> torch.Tensor:
    """``1 - mean soft-Dice`` of softmax(logits) against one-hot(target); arguments and shapes as
    :func:`dice_ce_loss`."""
    return dice_ce_loss(
        logits, target, lambda_dice=1.0, lambda_ce=0.0, include_background=include_background,
        batch=batch, ignore_empty=ignore_empty, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
        backend=backend,
    )
