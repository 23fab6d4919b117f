"""Class logit offsets chosen on the validation crops, folded into the head's bias.

A weighted loss shifts the classes' priors: with ``--border-weight 5`` the models of the
cross-validation called 1.5-2x too much background near boundaries, on unseen mice and on the
training images alike (docs/accuracy.md, "Offsets"). A constant per class added to the logits
before the argmax undoes such a shift; folded into the 1x1 head's bias it costs nothing at
inference and reaches every backend and export unchanged.
"""

from __future__ import annotations

import torch

# offsets tried per class (log-odds): -2 .. 2 in steps of 0.1
GRID = torch.linspace(-2.0, 2.0, 41)


def _mean_dice(pred: torch.Tensor, labels: torch.Tensor, present: list[int]) -> float:
    dice = []
    for c in present:
        p, t = pred == c, labels == c
        denom = int(p.sum()) + int(t.sum())
        dice.append(2 * int((p & t).sum()) / denom if denom else 1.0)
    return sum(dice) / len(dice)


def logit_offsets(logits: torch.Tensor, labels: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """Per-class offsets that maximise the mean Dice (over the classes present in
    ``labels``) of ``argmax(logits + offsets)``, by coordinate ascent over :data:`GRID`;
    classes absent from ``labels`` keep 0. An offset moves only when that raises the Dice.

    logits (N, C) float, labels (N,) int -> offsets (C,) float32."""
    logits = logits.float()
    num_classes = logits.shape[1]
    present = [c for c in range(num_classes) if bool((labels == c).any())]
    offsets = torch.zeros(num_classes)
    if len(present) < 2:
        return offsets
    best = _mean_dice(logits.argmax(1), labels, present)
    for _ in range(rounds):
        for c in present:
            for g in GRID:
                trial = offsets.clone()
                trial[c] = g
                score = _mean_dice((logits + trial).argmax(1), labels, present)
                if score > best + 1e-6:
                    best, offsets = score, trial
    return offsets


def add_to_head(net: torch.nn.Module, offsets: torch.Tensor) -> None:
    """Add ``offsets`` (C,) to the class logits of a ResUNet, in place: its head's bias (each
    class's ``subpixel**2`` sub-pixel channels alike)."""
    bias = net.head.bias
    per_class = bias.numel() // offsets.numel()
    with torch.no_grad():
        bias.add_(offsets.to(bias).repeat_interleave(per_class))
