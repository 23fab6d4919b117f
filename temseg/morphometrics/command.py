"""``temseg morphometrics MASK... --out DIR``: per-instance tables, aggregates and diameter
histograms of label masks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..data.io import DataError
from .rule import SplitRule


def _probabilities_of(mask: Path) -> Path:
    from .report import default_stem

    path = mask.with_name(f"{default_stem(str(mask))}_probabilities.tif")
    if not path.is_file():
        raise DataError(f"{mask}: --probabilities given but {path.name} is not next to it")
    return path


def run_morphometrics(args: Any) -> int:
    """Measure every mask; a failing mask is reported and the others go on (exit code 1)."""
    from .measure import measure_mask
    from .report import write_morphometrics

    rule = SplitRule(args.neck_ratio)
    failed = []
    for mask in args.masks:
        try:
            probs = _probabilities_of(Path(mask)) if args.probabilities else None
            result = measure_mask(mask, pixel_size_um=args.pixel_size, rule=rule,
                                  band_rows=args.band_rows, probabilities=probs,
                                  progress=not args.no_progress)
            paths = write_morphometrics(result, args.out)
        except (DataError, ValueError, OSError) as exc:
            failed.append((mask, str(exc)))
            print(f"  FAILED {mask}: {exc}", file=sys.stderr)
            continue
        counts = ", ".join(f"{c['count']} {name}" for name, c in
                           result.aggregates["classes"].items())
        units = "" if result.pixel_size_um else " (no pixel size: lengths in px)"
        print(f"{mask}: {counts}{units} -> {paths['csv']}")
    print(f"{len(args.masks) - len(failed)} measured into {args.out}, {len(failed)} failed")
    return 1 if failed else 0
