"""Morphometrics and instance-level evaluation of label masks.

* :func:`measure_mask`: instances of myelinated fibres and unmyelinated axons (components
  split at necks, see :mod:`temseg.morphometrics.instances`), their per-instance table and
  aggregates, for masks of any size (band by band);
* :func:`write_morphometrics`: ``<stem>_instances.csv`` (+ ``.parquet`` with pyarrow),
  ``<stem>_morphometrics.json``, a diameter histogram PNG per class;
* :func:`instance_scores`: instance matching at IoU >= 0.5, precision / recall / F1,
  panoptic quality and count error per class.

The names are imported on first use, so that ``temseg --help`` does not load numba.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MorphometricsResult": "measure", "measure_mask": "measure",
    "SplitRule": "rule", "write_morphometrics": "report",
    "instance_scores": "evaluate", "instance_labels": "evaluate",
    "combine_instance_scores": "evaluate", "match_instances": "evaluate",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
