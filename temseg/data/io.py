"""Reading images and masks: TIFF (8/16-bit, BigTIFF) and PNG, pairing by stem, pixel size."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..labels import TEM_CLASSES, ClassTable

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")

log = logging.getLogger("temseg.data")


class DataError(ValueError):
    """A problem with an input file or folder; the message names the file."""


@dataclass
class Sample:
    """One labelled image: ``image`` (H, W) uint8/uint16/float32, ``labels`` (H, W) uint8 class
    indices, the pixel size in micrometres when the file records it, and a group for splitting
    (e.g. the subject / mouse)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    pixel_size_um: float | None
    group: str


def _to_gray(arr: np.ndarray, path: Path) -> np.ndarray:
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].astype(np.float32)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return arr[..., 0]
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return gray.round().astype(arr.dtype) if arr.dtype.kind in "ui" else gray
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D grayscale image, got shape {arr.shape}")
    return arr


def _tiff_pixel_size_um(tif: tifffile.TiffFile) -> float | None:
    page = tif.pages[0]
    desc = page.tags.get("ImageDescription")
    if desc is not None:
        try:
            meta = json.loads(desc.value)
            if isinstance(meta, dict) and "PixelSizeMicrometers" in meta:
                return float(meta["PixelSizeMicrometers"])
        except (json.JSONDecodeError, TypeError, ValueError):
            pass
    xres = page.tags.get("XResolution")
    if xres is None:
        return None
    num, den = xres.value
    if not num or not den:
        return None
    pixels_per_unit = num / den
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    if unit == 3:  # centimetre
        return 1e4 / pixels_per_unit
    if unit == 2:  # inch: only trust it when it is not a screen default (72/96/300 dpi)
        if pixels_per_unit in (1, 72, 96, 150, 300, 600):
            return None
        return 2.54e4 / pixels_per_unit
    ij = tif.imagej_metadata or {}
    if str(ij.get("unit", "")).lower() in ("micron", "um", "µm", "\\u00b5m"):
        return 1.0 / pixels_per_unit
    return None


def read_image(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a grayscale image.

    Returns:
        image: (H, W) uint8, uint16 or float32.
        pixel_size_um: from the TIFF tags or the JSON description when present, else None.

    Raises:
        DataError naming the file when it is missing, unreadable or not a 2-D grayscale image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                arr = tif.asarray()
                pixel_size = _tiff_pixel_size_um(tif)
        else:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
            pixel_size = None
    except DataError:
        raise
    except Exception as exc:  # corrupt or truncated files raise many different errors
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    arr = _to_gray(arr, path)
    if arr.size == 0:
        raise DataError(f"{path}: image is empty")
    if arr.dtype == np.uint16 or arr.dtype == np.uint8:
        return arr, pixel_size
    if arr.dtype.kind in "iu":
        return arr.astype(np.float32), pixel_size
    if arr.dtype.kind == "f":
        return arr.astype(np.float32), pixel_size
    if arr.dtype == bool:
        return arr.astype(np.uint8), pixel_size
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}")


def check_finite(image: np.ndarray, source: str | Path) -> np.ndarray:
    """``image`` itself, or DataError naming ``source`` and the first (row, col) holding NaN or
    inf. Integer images are always finite."""
    if image.dtype.kind in "fc" and not np.isfinite(image).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(image))[0][-2:])
        raise DataError(f"{source}: image has non-finite pixels (NaN or inf), the first at "
                        f"(row, col) ({row}, {col}): {image[..., row, col].ravel()[0]}")
    return image


def read_mask(path: str | Path, classes: ClassTable = TEM_CLASSES) -> np.ndarray:
    """Read a mask file and remap its grey values to class indices: (H, W) uint8.

    Raises DataError naming the file and the offending values.
    """
    arr, _ = read_image(path)
    try:
        return classes.encode(arr, source=str(path))
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def _images_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in found:
                raise DataError(f"{folder}: two files share the stem {p.stem!r}: "
                                f"{found[p.stem].name} and {p.name}")
            found[p.stem] = p
    return found


def find_pairs(data_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair ``DATA/images/X.*`` with ``DATA/masks/X.*`` by stem.

    Raises DataError when a folder is missing or empty or an image has no mask; a mask without
    an image is ignored with a warning naming it.
    """
    data_dir = Path(data_dir)
    img_dir, mask_dir = data_dir / "images", data_dir / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (expected DATA/images and DATA/masks)")
    images, masks = _images_in(img_dir), _images_in(mask_dir)
    if not images:
        raise DataError(f"{img_dir}: no images (*.tif, *.tiff, *.png)")
    for stem in sorted(set(masks) - set(images)):
        log.warning("%s: mask without an image in %s: ignored", masks[stem], img_dir)
    missing = sorted(set(images) - set(masks))
    if missing:
        raise DataError(f"{mask_dir}: no mask for image(s) {', '.join(missing[:5])}"
                        + (" ..." if len(missing) > 5 else ""))
    return [(images[s], masks[s]) for s in sorted(images)]


_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)")


def group_of(stem: str) -> str:
    """Splitting group of a file stem: its BIDS subject (``sub-XXX``) when present, else the stem
    itself, so that images of one animal never end up on both sides of a split."""
    m = _SUBJECT.match(stem)
    return m.group(1) if m else stem


def load_dataset(data_dir: str | Path, classes: ClassTable = TEM_CLASSES) -> list[Sample]:
    """Load every image/mask pair of ``DATA`` into memory, checking sizes, label values and that
    the pixels are finite (DataError naming the file otherwise)."""
    samples = []
    for img_path, mask_path in find_pairs(data_dir):
        image, pixel_size = read_image(img_path)
        check_finite(image, img_path)
        labels = read_mask(mask_path, classes)
        if image.shape != labels.shape:
            raise DataError(f"{mask_path}: mask size {labels.shape[1]}x{labels.shape[0]} does not "
                            f"match image {img_path.name} size {image.shape[1]}x{image.shape[0]}")
        samples.append(Sample(img_path.stem, image, labels, pixel_size, group_of(img_path.stem)))
    return samples
