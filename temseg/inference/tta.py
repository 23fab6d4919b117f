"""Test-time augmentation: average a backend over flips / 90-degree rotations of its tiles.

Each transform ``g`` is applied to the batch, the backend runs, and ``g``'s inverse is
applied to the output before averaging, so the averaged probabilities are aligned with the
input tile and can be stitched like any backend output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["DIHEDRAL", "FLIPS", "TTABackend"]

# (k, flip): x -> rot90(flip_x(x) if flip else x, k) over the last two axes.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))
# The subset that keeps a non-square tile's shape: identity, flip x, flip y, rot180.
FLIPS: tuple[tuple[int, bool], ...] = ((0, False), (0, True), (2, True), (2, False))


def _forward(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        y = torch.rot90(y, -k, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if flip else y


class TTABackend:
    """Wraps a backend ``(B, 1, th, tw) -> (B, C, th, tw)`` and averages its outputs over
    ``transforms`` (default: the 8 dihedral transforms for square tiles, the 4 flips /
    rot180 otherwise). Output: float32 CPU (B, C, th, tw), the mean in transform order."""

    def __init__(self, backend: Callable[[torch.Tensor], torch.Tensor],
                 transforms: Sequence[tuple[int, bool]] | None = None) -> None:
        self.backend = backend
        self.transforms = tuple(transforms) if transforms is not None else None
        self.name = f"{getattr(backend, 'name', 'backend')}+tta"
        self.num_classes = getattr(backend, "num_classes", None)

    def transforms_for(self, th: int, tw: int) -> tuple[tuple[int, bool], ...]:
        """The transforms used for (th, tw) tiles (odd rotations need square tiles)."""
        if self.transforms is not None:
            if th != tw and any(k % 2 for k, _ in self.transforms):
                raise ValueError(f"90-degree rotations need square tiles, got {th}x{tw}")
            return self.transforms
        return DIHEDRAL if th == tw else FLIPS

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        transforms = self.transforms_for(*batch.shape[-2:])
        for k, flip in transforms:
            x = _forward(batch, k, flip).contiguous()
            y = _inverse(self.backend(x).to("cpu", torch.float32), k, flip)
            total = y.clone() if total is None else total.add_(y)
        assert total is not None
        return total.div_(len(transforms))
