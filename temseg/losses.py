"""Training losses with MONAI argument names, backed by :mod:`temseg.kernels` (Triton on CUDA,
the PyTorch reference elsewhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        border_weight: ``w``: the cross-entropy of the thin background lines between touching
            objects (:func:`thin_background`) counts ``1 + w`` times (the ``weight`` of
            :func:`temseg.kernels.dice_ce_loss`), U-Net's separation weight map (Ronneberger
            et al. 2015) in its simplest form; 0: off. Not MONAI's.

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
        border_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.border_weight = border_weight
        self.kwargs = dict(include_background=include_background, batch=batch,
                           ignore_empty=ignore_empty, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                           lambda_dice=lambda_dice, lambda_ce=lambda_ce)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None
        if self.border_weight:
            weight = 1.0 + self.border_weight * thin_background(target)
        return dice_ce_loss(logits, target, weight=weight, **self.kwargs)


class DeepSupervisionLoss(nn.Module):
    """``loss`` of each output of a deeply supervised network against the target shrunk to
    its size (nearest-exact, as MONAI), weighted and summed, as
    ``monai.losses.DeepSupervisionLoss`` with its ``weight_mode`` "exp" (level ``l`` weighs
    ``max(0.5**l, 0.0625)``), "same" (all 1), "two" (1, then 0.5 each) or explicit
    ``weights``; but the weights are normalised to sum 1, as nnU-Net's, so that the loss keeps
    the scale of the full-resolution one (and with it gradient clipping and the learning rate).

    Forward: logits (B, C, H, W) or a list of them, the first at full resolution, the others
    coarser; target (B, H, W) int64 -> 0-d fp32 loss (logits are cast to fp32 first, for
    AMP). A single tensor is ``loss`` of it alone.
    """

    def __init__(self, loss: nn.Module, weight_mode: str = "exp",
                 weights: list[float] | None = None) -> None:
        super().__init__()
        if weight_mode not in ("exp", "same", "two") and weights is None:
            raise ValueError(f"weight_mode {weight_mode!r}: 'exp', 'same' or 'two' (or weights)")
        self.loss, self.weight_mode, self.weights = loss, weight_mode, weights

    def level_weights(self, levels: int) -> list[float]:
        if self.weights is not None:
            if len(self.weights) < levels:
                raise ValueError(f"{len(self.weights)} weights for {levels} outputs")
            w = list(self.weights[:levels])
        elif self.weight_mode in ("same", "two"):
            w = [1.0] + [1.0 if self.weight_mode == "same" else 0.5] * (levels - 1)
        else:
            w = [max(0.5**level, 0.0625) for level in range(levels)]
        return [x / sum(w) for x in w]

    def forward(self, logits: torch.Tensor | list[torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits.float(), target)
        total = logits[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(self.level_weights(len(logits)), logits, strict=True):
            t = target
            if out.shape[-2:] != target.shape[-2:]:
                t = F.interpolate(target[:, None].float(), size=out.shape[-2:],
                                  mode="nearest-exact")[:, 0].long()
            total = total + w * self.loss(out.float(), t)
        return total


def _dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` x ``size`` dilation of a (B, H, W) bool mask (outside counts as False), as
    shifted ORs along each axis: far cheaper on CPUs than a max-pool of one channel."""
    r = size // 2
    for dim in (1, 2):
        out, n = mask.clone(), mask.shape[dim]
        for d in range(1, min(r, n - 1) + 1):
            out.narrow(dim, d, n - d).logical_or_(mask.narrow(dim, 0, n - d))
            out.narrow(dim, 0, n - d).logical_or_(mask.narrow(dim, d, n - d))
        mask = out
    return mask


def thin_background(target: torch.Tensor, size: int = 3) -> torch.Tensor:
    """The background pixels that a ``size`` x ``size`` opening of the background removes:
    lines narrower than ``size`` px, such as those annotators draw between touching axons
    (and other specks of background). ``size``: odd.

    target: (B, H, W) integer classes (0 = background) -> (B, H, W) bool."""
    bg = target == 0
    eroded = ~_dilate(~bg, size)  # outside the patch counts as background
    return bg & ~_dilate(eroded, size)


class DiceLoss(DiceCELoss):
    """``1 - mean soft-Dice`` alone; arguments as :class:`DiceCELoss` without the lambdas."""

    def __init__(self, include_background: bool = True, batch: bool = True,
                 ignore_empty: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5) -> None:
        super().__init__(include_background, batch, ignore_empty, smooth_nr, smooth_dr,
                         lambda_dice=1.0, lambda_ce=0.0)
