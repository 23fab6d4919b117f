"""The class table: names, grey values on disk, overlay colours, and the remap between them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassTable:
    """Classes of a segmentation task.

    ``values[i]`` is the grey value that encodes class ``i`` in mask files on disk.
    """

    names: tuple[str, ...]
    values: tuple[int, ...]
    colors: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "values": list(self.values),
                "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, d: dict) -> ClassTable:
        return cls(tuple(d["names"]), tuple(int(v) for v in d["values"]),
                   tuple(tuple(int(x) for x in c) for c in d["colors"]))

    def encode(self, mask: np.ndarray, source: str = "mask") -> np.ndarray:
        """Grey values on disk (H, W) -> class indices (H, W) uint8.

        Raises ValueError naming ``source`` and the unexpected values when the mask holds a value
        that is not in the table, or NaN/inf (with the first position).
        """
        if mask.dtype.kind == "f" and not np.isfinite(mask).all():
            row, col = np.argwhere(~np.isfinite(mask))[0][-2:]
            raise ValueError(f"{source}: mask has non-finite values (NaN or inf), the first at "
                             f"(row, col) ({row}, {col}): {mask[..., row, col].ravel()[0]}")
        lut = np.full(max(int(mask.max(initial=0)), max(self.values)) + 1, 255, dtype=np.uint8)
        for i, v in enumerate(self.values):
            lut[v] = i
        if mask.dtype.kind not in "ui":
            if not np.all(np.equal(np.mod(mask, 1), 0)):
                raise ValueError(f"{source}: mask has non-integer values")
            mask = mask.astype(np.int64)
        if mask.min(initial=0) < 0:
            raise ValueError(f"{source}: mask has negative values")
        out = lut[mask]
        if (out == 255).any():
            bad = np.unique(mask[out == 255])
            shown = ", ".join(str(int(b)) for b in bad[:10]) + (" ..." if bad.size > 10 else "")
            raise ValueError(
                f"{source}: mask has values {{{shown}}} that are not class values "
                f"{list(self.values)} ({', '.join(self.names)})"
            )
        return out

    def decode(self, labels: np.ndarray) -> np.ndarray:
        """Class indices (H, W) -> grey values on disk (H, W) uint8."""
        return np.asarray(self.values, dtype=np.uint8)[labels]

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Class indices (H, W) -> RGB (H, W, 3) uint8."""
        return np.asarray(self.colors, dtype=np.uint8)[labels]


TEM_CLASSES = ClassTable(
    names=("background", "blood_vessel", "myelinated_axon", "unmyelinated_axon", "schwann_cell"),
    values=(0, 50, 100, 150, 200),
    colors=((0, 0, 0), (230, 60, 60), (60, 120, 255), (60, 220, 90), (250, 200, 40)),
)
