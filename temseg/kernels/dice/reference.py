"""PyTorch reference for the fused soft-Dice (+ cross-entropy) loss.

The loss is split in two stages so that the Triton kernel only has to replace the heavy one:

1. :func:`dice_ce_stats_reference` — one pass over the logits: per (sample, class) soft
   intersection ``I``, predicted mass ``P``, ground-truth count ``G``, and the per-sample sum of
   the pixel cross-entropies. This is what the kernel fuses (softmax, one-hot, products and sums
   never materialised).
2. :func:`loss_from_stats` — a handful of tiny (batch, classes) tensor operations shared by every
   backend, so the absent-class rule is identical everywhere.

Absent-class rule (``ignore_empty=True``): a Dice term whose ground truth is empty (``G == 0``)
is left out of the mean; if every term is empty the Dice loss is 0. False positives of a class
that is absent are still penalised by the cross-entropy term.
"""

from __future__ import annotations

import torch


def dice_ce_stats_reference(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample, per-class soft-Dice sums and cross-entropy sums.

    Args:
        logits: (B, C, H, W) float logits (fp32/fp16/bf16/fp64); computed in at least fp32.
        target: (B, H, W) integer class indices in [0, C).
        weight: optional (B, H, W) per-pixel weights of the cross-entropy (not of the Dice).

    Returns:
        inter: (B, C) sum over pixels of softmax(logits)[c] * [target == c].
        psum:  (B, C) sum over pixels of softmax(logits)[c].
        gsum:  (B, C) number of pixels with target == c (same dtype as inter).
        ce:    (B,) sum over pixels of -log softmax(logits)[target] (times ``weight``).
    """
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(compute)
    b, num_classes = x.shape[:2]
    logp = torch.log_softmax(x, dim=1)
    psum = logp.exp().sum(dim=(2, 3))
    # the target class's log-probability per pixel; the one-hot is never materialised
    index = target.long().reshape(b, 1, -1)
    logp_t = logp.reshape(b, num_classes, -1).gather(1, index)[:, 0]  # (B, H*W)
    inter = x.new_zeros(b, num_classes).scatter_add_(1, index[:, 0], logp_t.exp())
    gsum = x.new_zeros(b, num_classes).scatter_add_(1, index[:, 0], torch.ones_like(logp_t))
    if weight is not None:
        logp_t = logp_t * weight.reshape(b, -1).to(compute)
    ce = -logp_t.sum(dim=1)
    return inter, psum, gsum, ce


def loss_from_stats(
    inter: torch.Tensor,
    psum: torch.Tensor,
    gsum: torch.Tensor,
    ce: torch.Tensor,
    n_pixels: int,
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 0.0,
    include_background: bool = True,
    batch: bool = False,
    ignore_empty: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
) -> torch.Tensor:
    """Combine the sums into ``lambda_ce * CE + lambda_dice * (1 - mean Dice)`` (a 0-d tensor).

    Args:
        inter, psum, gsum: (B, C) from :func:`dice_ce_stats_reference` or the kernel.
        ce: (B,) per-sample cross-entropy sums.
        n_pixels: pixels per sample (H * W); CE is averaged over B * H * W pixels.
        include_background: keep class 0 in the Dice mean (MONAI name).
        batch: sum the Dice statistics over the batch before dividing (MONAI name).
        ignore_empty: leave Dice terms with an empty ground truth out of the mean.
        smooth_nr, smooth_dr: added to numerator and denominator (MONAI names).
    """
    if not include_background:
        inter, psum, gsum = inter[:, 1:], psum[:, 1:], gsum[:, 1:]
    if batch:
        inter, psum, gsum = inter.sum(0), psum.sum(0), gsum.sum(0)
    dice = (2.0 * inter + smooth_nr) / (psum + gsum + smooth_dr)
    if ignore_empty:
        keep = (gsum > 0).to(dice.dtype)
        dice_loss = ((1.0 - dice) * keep).sum() / keep.sum().clamp_min(1.0)
    else:
        dice_loss = (1.0 - dice).mean()
    loss = lambda_dice * dice_loss
    if lambda_ce:
        loss = loss + lambda_ce * ce.sum() / (ce.shape[0] * n_pixels)
    return loss


def dice_ce_loss_reference(
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
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``lambda_ce * CrossEntropy + lambda_dice * soft-Dice`` on (B, C, H, W) logits and
    (B, H, W) integer targets (``weight``: (B, H, W) of the cross-entropy's pixels); returns
    a 0-d tensor (fp32, or fp64 for fp64 logits)."""
    inter, psum, gsum, ce = dice_ce_stats_reference(logits, target, weight)
    return loss_from_stats(
        inter, psum, gsum, ce, target.shape[-2] * target.shape[-1],
        lambda_dice=lambda_dice, lambda_ce=lambda_ce, include_background=include_background,
        batch=batch, ignore_empty=ignore_empty, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
    )
