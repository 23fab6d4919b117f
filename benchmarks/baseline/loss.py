"""Baseline loss: cross-entropy + soft-Dice computed the plain way.

Softmax probabilities, a one-hot target, their product and the sums are all separate
(B, C, H, W) tensors, unlike temseg's fused :func:`temseg.kernels.dice_ce_loss`. The Dice is
the batch Dice used for training (sums pooled over the batch) over all classes; unlike
temseg's loss there is no absent-class rule, so both agree when every class is present.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def baseline_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, lambda_dice: float = 0.5,
                          lambda_ce: float = 1.0, smooth: float = 1e-5) -> torch.Tensor:
    """``lambda_ce * CE + lambda_dice * (1 - mean_c Dice_c)``.

    logits (B, C, H, W) float, target (B, H, W) int64 -> 0-d loss.
    """
    num_classes = logits.shape[1]
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    intersection = (probs * onehot).sum(dim=(0, 2, 3))
    cardinality = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2.0 * intersection + smooth) / (cardinality + smooth)
    return lambda_ce * ce + lambda_dice * (1.0 - dice.mean())


class BaselineDiceCELoss(nn.Module):
    """Module form of :func:`baseline_dice_ce_loss`."""

    def __init__(self, lambda_dice: float = 0.5, lambda_ce: float = 1.0,
                 smooth: float = 1e-5) -> None:
        super().__init__()
        self.lambda_dice, self.lambda_ce, self.smooth = lambda_dice, lambda_ce, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return baseline_dice_ce_loss(logits, target, self.lambda_dice, self.lambda_ce,
                                     self.smooth)
