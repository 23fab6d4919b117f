"""Morphometrics and instance-level evaluation of label masks.

* :func:`measure_mask`: instances of myelinated fibres and unmyelinated axons (components
  split at necks, see :mod:`temseg.morphometrics.instances`), their per-instance table and
  aggregates, for masks of any size (band by band);
* :func:`write_morphometrics`: ``<stem>_instances.csv`` (+ ``.parquet`` with pyarrow),
  ``<stem>_morphometrics.json``, a diameter histogram PNG per class;
* :func:`instance_scores`: instance matching at IoU >= 0.5, precision / recall / F1,
  panoptic quality and count error per class.
"""

from .evaluate import combine_instance_scores, instance_labels, instance_scores
from .instances import SplitRule
from .measure import MorphometricsResult, measure_mask
from .report import write_morphometrics

__all__ = ["MorphometricsResult", "SplitRule", "combine_instance_scores", "instance_labels",
           "instance_scores", "measure_mask", "write_morphometrics"]
