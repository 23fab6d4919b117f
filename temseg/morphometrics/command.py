"""``temseg morphometrics MASK... --out DIR``: per-instance tables, aggregates and diameter
histograms of label masks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.io import DataError
from .rule import SplitRule


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the ``morphometrics`` subcommand."""
    p.add_argument("masks", nargs="+", help="label masks (TIFF/PNG/OME-Zarr, grey values "
                   "0/50/100/150/200), e.g. temseg predict's <stem>_mask.tif")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in micrometres (default: from the TIFF tags; without "
                        "one, lengths are reported in px)")
    p.add_argument("--neck-ratio", type=float, default=SplitRule.neck_ratio,
                   help="split touching instances at necks narrower than this fraction of "
                        "the radius of both parts (0: never split; default %(default)s)")
    p.add_argument("--band-rows", type=int, default=None,
                   help="rows read at a time (default: 2 MPix / mask width); memory only, "
                        "the result does not depend on it")
    p.add_argument("--probabilities", action="store_true",
                   help="add each instance's mean class probability from the "
                        "<stem>_probabilities.tif next to its mask")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _probabilities_of(mask: Path) -> Path:
    from .report import default_stem

    path = mask.with_name(f"{default_stem(str(mask))}_probabilities.tif")
    if not path.is_file():
        raise DataError(f"{mask}: --probabilities given but {path.name} is not next to it")
    return path


def run_morphometrics(args: argparse.Namespace) -> int:
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
