"""temseg: segmentation of transmission electron microscopy (TEM) images of nerve tissue.

Classes: 0 background, 1 blood vessel, 2 myelinated axon, 3 unmyelinated axon, 4 Schwann cell
(grey values 0/50/100/150/200 in mask files).
"""

from .checkpoint import SegmentationModel, load_model
from .labels import TEM_CLASSES, ClassTable

__version__ = "0.1.0"
__all__ = ["TEM_CLASSES", "ClassTable", "SegmentationModel", "__version__", "load_model"]
