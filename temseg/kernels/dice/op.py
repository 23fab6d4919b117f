"""``torch.library`` custom ops wrapping the fused soft-Dice + CE kernels.

``temseg::dice_ce_stats(logits, target) -> (inter, psum, gsum, ce)`` replaces
:func:`~.reference.dice_ce_stats_reference`; ``temseg::dice_ce_stats_bwd(logits, target,
grad_inter, grad_psum, grad_ce) -> grad_logits`` is its backward (softmax recomputed per pixel).
Both have fake implementations for ``torch.compile``; autograd saves only logits and target.
``gsum`` is marked non-differentiable. Registering does not import Triton.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import registered


def _stats_impl(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from .triton_kernel import dice_ce_stats_triton

    return dice_ce_stats_triton(logits, target)


def _stats_fake(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    bsz, num_classes = logits.shape[:2]
    bc = logits.new_empty((bsz, num_classes), dtype=torch.float32)
    return bc, torch.empty_like(bc), torch.empty_like(bc), logits.new_empty((bsz,),
                                                                            dtype=torch.float32)


def _bwd_impl(logits: Tensor, target: Tensor, grad_inter: Tensor, grad_psum: Tensor,
              grad_ce: Tensor) -> Tensor:
    from .triton_kernel import dice_ce_stats_backward_triton

    return dice_ce_stats_backward_triton(logits, target, grad_inter, grad_psum, grad_ce)


def _bwd_fake(logits: Tensor, target: Tensor, grad_inter: Tensor, grad_psum: Tensor,
              grad_ce: Tensor) -> Tensor:
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _setup_context(ctx, inputs, output) -> None:
    logits, target = inputs
    ctx.save_for_backward(logits, target)
    ctx.mark_non_differentiable(output[2])


def _backward(ctx, g_inter: Tensor | None, g_psum: Tensor | None, g_gsum: Tensor | None,
              g_ce: Tensor | None):
    logits, target = ctx.saved_tensors
    bsz, num_classes = logits.shape[:2]
    if g_inter is None:
        g_inter = logits.new_zeros((bsz, num_classes), dtype=torch.float32)
    if g_psum is None:
        g_psum = logits.new_zeros((bsz, num_classes), dtype=torch.float32)
    if g_ce is None:
        g_ce = logits.new_zeros((bsz,), dtype=torch.float32)
    grad = torch.ops.temseg.dice_ce_stats_bwd(logits, target, g_inter, g_psum, g_ce)
    return grad, None


if not registered("dice_ce_stats"):
    dice_ce_stats_op = torch.library.custom_op("temseg::dice_ce_stats", mutates_args=())(
        _stats_impl)
    dice_ce_stats_op.register_fake(_stats_fake)
    dice_ce_stats_bwd_op = torch.library.custom_op("temseg::dice_ce_stats_bwd", mutates_args=())(
        _bwd_impl)
    dice_ce_stats_bwd_op.register_fake(_bwd_fake)
    dice_ce_stats_op.register_autograd(_backward, setup_context=_setup_context)


def dice_ce_stats(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Differentiable fused statistics through the custom op; see ``dice_ce_stats_reference``."""
    return torch.ops.temseg.dice_ce_stats(logits, target)
