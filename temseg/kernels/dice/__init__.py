"""Fused soft-Dice (+ cross-entropy) loss: public functions and the PyTorch reference."""

from .api import dice_ce_loss, soft_dice_loss
from .reference import dice_ce_loss_reference, dice_ce_stats_reference, loss_from_stats

__all__ = [
    "dice_ce_loss",
    "dice_ce_loss_reference",
    "dice_ce_stats_reference",
    "loss_from_stats",
    "soft_dice_loss",
]
