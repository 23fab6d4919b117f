"""An exponential moving average of the weights (Polyak averaging, timm's ``ModelEmaV3``).

``--ema-decay D`` keeps ``avg = D_t * avg + (1 - D_t) * weights`` after every optimiser step,
with the decay warmed up as ``D_t = min(D, (1 + t) / (10 + t))`` (t: updates so far), so the
first steps are not averaged with the random initialisation. Validation, ``best.pt`` and the
model of ``last.pt`` hold the average (what ``temseg predict`` uses); ``last.pt`` keeps the raw
weights beside it so that a resumed run goes on exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (0-based): warmed up, capped at ``decay``."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """The moving average of ``net``'s floating-point state (parameters and BatchNorm
    statistics; integer buffers such as ``num_batches_tracked`` are copied)."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        self.decay, self.updates = decay, 0
        self.average = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Fold ``net``'s current weights into the average (after an optimiser step)."""
        d = ema_decay(self.decay, self.updates)
        current = net.state_dict()
        floats = [k for k, v in self.average.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.average[k] for k in floats], [current[k] for k in floats],
                             1.0 - d)
        for k, v in self.average.items():
            if not v.is_floating_point():
                v.copy_(current[k])
        self.updates += 1

    @contextmanager
    def applied(self, net: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """``net`` holds the average inside the block (copied in place, so a compiled
        wrapper of ``net`` stays valid); yields a copy of its raw weights, restored after."""
        raw = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.average)
        try:
            yield raw
        finally:
            net.load_state_dict(raw)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates}

    def load(self, average: dict[str, torch.Tensor], state: dict) -> None:
        """Restore from a checkpoint: ``average`` its model weights, ``state`` from
        :meth:`state_dict`."""
        self.average = {k: v.detach().clone().to(self.average[k].dtype)
                        for k, v in average.items()}
        self.updates = int(state["updates"])
