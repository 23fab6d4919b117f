"""temseg.kernels: fused GPU operators (Triton) with their PyTorch references.

Public functions dispatch on the device: CUDA tensors run the Triton kernels, CPU tensors the
PyTorch reference that sits next to each kernel; ``backend=`` forces a path.
"""

from .attention import attention, attention_math, attention_reference
from .dice import (
    dice_ce_loss,
    dice_ce_loss_reference,
    dice_ce_stats_reference,
    loss_from_stats,
    soft_dice_loss,
)

__all__ = [
    "attention",
    "attention_math",
    "attention_reference",
    "dice_ce_loss",
    "dice_ce_loss_reference",
    "dice_ce_stats_reference",
    "loss_from_stats",
    "soft_dice_loss",
]
