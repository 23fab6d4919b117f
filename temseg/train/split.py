"""Train/validation split by image group (animal), never by patch."""

from __future__ import annotations

import numpy as np

from ..data.io import Sample


def split_samples(samples: list[Sample], val_fraction: float = 0.2,
                  val_groups: tuple[str, ...] = (), seed: int = 0
                  ) -> tuple[list[Sample], list[Sample]]:
    """Split by ``Sample.group``: the named ``val_groups`` (groups or image names), or else a
    seeded random ``val_fraction`` of the groups (at least one when there are two or more).
    A single group cannot be split: validation then reuses the training images (and says so
    in the run log)."""
    groups = sorted({s.group for s in samples})
    if val_groups:
        chosen = set(val_groups)
        unknown = chosen - set(groups) - {s.name for s in samples}
        if unknown:
            raise ValueError(f"validation groups not in the data: {sorted(unknown)}; "
                             f"groups are {groups}")
        val = [s for s in samples if s.group in chosen or s.name in chosen]
    elif len(groups) < 2 or val_fraction <= 0:
        return samples, []
    else:
        rng = np.random.default_rng(seed)
        n = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
        chosen = set(rng.choice(groups, size=n, replace=False).tolist())
        val = [s for s in samples if s.group in chosen]
    train = [s for s in samples if s not in val]
    if not train:
        raise ValueError("the validation split leaves no training images")
    return train, val
