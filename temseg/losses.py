"""Training losses with MONAI argument names, backed by :mod:`temseg.kernels` (Triton on CUDA,
the PyTorch reference elsewhere)."""

from __future__ import annotations

import torch
from torch import nn

from .kernels import dice_ce_loss


class DiceCELoss(nn.Module):
    """``lambda_ce * CrossEntropy + lambda_dice * (1 - mean soft-Dice)`` of softmax(logits).

    Args (``monai.losses.DiceCELoss`` names; softmax and one-hot of the target are implied):
        include_background: keep class 0 in the Dice mean.
        batch: pool the Dice sums over the batch before dividing (nnU-Net's batch Dice); this
            makes rare classes count in batches where only some patches contain them.
        ignore_empty: Dice terms whose ground truth is empty are left out of the mean, so a
            class that a batch (or a whole dataset) lacks does not pull the loss; its false
            positives are still penalised by the cross-entropy.
        smooth_nr, smooth_dr: added to the Dice numerator and denominator.
        lambda_dice, lambda_ce: weights of the two terms (temseg default 0.5 and 1.0).

    Forward: logits (B, C, H, W) float, target (B, H, W) int64 -> 0-d fp32 loss.
    """

    def __init__(
        self,
        include_background: bool = True,
        batch: bool = True,
        ignore_empty: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        lambda_dice: float = 0.5,
        lambda_ce: float = 1.0,
    ) -> None:
        super().__init__()
        self.kwargs = dict(include_background=include_background, batch=batch,
                           ignore_empty=ignore_empty, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                           lambda_dice=lambda_dice, lambda_ce=lambda_ce)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits, target, **self.kwargs)


class DiceLoss(DiceCELoss):
    """``1 - mean soft-Dice`` alone; arguments as :class:`DiceCELoss` without the lambdas."""

    def __init__(self, include_background: bool = True, batch: bool = True,
                 ignore_empty: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5) -> None:
        super().__init__(include_background, batch, ignore_empty, smooth_nr, smooth_dr,
                         lambda_dice=1.0, lambda_ce=0.0)
