"""Metadata that travels with an exported model, so a runtime needs nothing else.

One flat ``str -> str`` map is used everywhere:

* ONNX: the model's ``metadata_props``;
* AOTInductor packages: the package metadata (``AOTIModelPackageLoader::get_metadata()``);
* TensorRT engines: a JSON object of strings in ``<engine>.json`` beside the engine.

The flat keys (``temseg.*``) are what the C++ runtime reads (no JSON parser needed beyond a flat
object of strings); ``temseg.metadata`` additionally holds the full nested JSON
(:meth:`temseg.SegmentationModel.metadata` plus export details) for Python tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import default_roi_size
from ..data.normalize import Normalization
from ..labels import ClassTable

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ModelInfo",
    "flat_metadata",
    "read_onnx_metadata",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

FORMAT_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "scores"
PREFIX = "temseg."


@dataclass(frozen=True)
class ModelInfo:
    """What a runtime needs to apply an exported model to raw images.

    Attributes mirror :class:`temseg.SegmentationModel` (``normalization``, ``classes``,
    ``patch_size``, ``pixel_size_um``) plus the export contract: the graph maps
    ``input_name`` (B, 1, H, W) float32 normalised tiles to ``output_name`` (B, C, H, W)
    float32, probabilities when ``softmax`` else logits; H and W must be multiples of
    ``tile_multiple``. ``roi_size`` is the inference tile side every runtime uses by default
    (:func:`temseg.checkpoint.default_roi_size` of the patch unless given).
    """

    normalization: Normalization
    classes: ClassTable
    patch_size: int
    pixel_size_um: float | None
    softmax: bool = False
    tile_multiple: int = 8
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    model_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    roi_size: int = 0

    def __post_init__(self) -> None:
        if self.roi_size <= 0:
            object.__setattr__(self, "roi_size", default_roi_size(self.patch_size))
        if self.roi_size % self.tile_multiple:
            raise ValueError(f"roi_size {self.roi_size} is not a multiple of "
                             f"{self.tile_multiple}")

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @classmethod
    def from_model(cls, model: Any, softmax: bool = False, **extra: Any) -> ModelInfo:
        """From a :class:`temseg.SegmentationModel` (``extra``: export details to record)."""
        net = getattr(model.net, "_orig_mod", model.net)
        return cls(model.normalization, model.classes, int(model.patch_size),
                   model.pixel_size_um, softmax, int(net.multiple),
                   model_config=net.config.to_dict(), extra=dict(extra),
                   roi_size=int(model.roi_size))

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON-ready form (the ``temseg.metadata`` entry)."""
        return {
            "format": "temseg-export",
            "format_version": int(FORMAT_VERSION),
            "normalization": self.normalization.to_dict(),
            "classes": self.classes.to_dict(),
            "patch_size": self.patch_size,
            "roi_size": self.roi_size,
            "pixel_size_um": self.pixel_size_um,
            "softmax": self.softmax,
            "tile_multiple": self.tile_multiple,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "model_config": self.model_config,
            **({"export": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_flat(cls, flat: dict[str, str], source: str = "model") -> ModelInfo:
        """Parse the flat map written by :func:`flat_metadata`.

        Raises ValueError naming ``source`` when the temseg entries are missing or invalid.
        """
        raw = flat.get(PREFIX + "metadata")
        if raw is None:
            raise ValueError(f"{source}: no temseg metadata (key {PREFIX}metadata); "
                             "was it written by `temseg export`?")
        try:
            d = json.loads(raw)
            version = str(d.get("format_version"))
            if version != FORMAT_VERSION:
                raise ValueError(f"metadata format version {version}, this temseg reads "
                                 f"{FORMAT_VERSION}")
            return cls(
                normalization=Normalization.from_dict(d["normalization"]),
                classes=ClassTable.from_dict(d["classes"]),
                patch_size=int(d["patch_size"]),
                pixel_size_um=None if d["pixel_size_um"] is None else float(d["pixel_size_um"]),
                softmax=bool(d["softmax"]),
                tile_multiple=int(d["tile_multiple"]),
                input_name=str(d["input_name"]),
                output_name=str(d["output_name"]),
                model_config=dict(d.get("model_config", {})),
                extra=dict(d.get("export", {})),
                roi_size=int(d.get("roi_size", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: invalid temseg metadata: {exc}") from exc


def flat_metadata(info: ModelInfo) -> dict[str, str]:
    """The flat ``temseg.*`` string map (see the module docstring).

    Keys: ``format_version``, ``metadata`` (full JSON), ``num_classes``, ``class_names`` and
    ``class_values`` (comma-separated), ``patch_size``, ``roi_size`` (default inference
    tile side), ``pixel_size_um`` (empty when unknown),
    ``norm.method`` / ``norm.lower`` / ``norm.upper`` / ``norm.max_samples`` (percentiles
    mapped to -1 / +1), ``output`` ("probabilities" | "logits"), ``tile_multiple``,
    ``input_name``, ``output_name``.
    """
    norm = info.normalization
    flat = {
        "format_version": FORMAT_VERSION,
        "metadata": json.dumps(info.to_dict(), sort_keys=True),
        "num_classes": str(info.num_classes),
        "class_names": ",".join(info.classes.names),
        "class_values": ",".join(str(v) for v in info.classes.values),
        "patch_size": str(info.patch_size),
        "roi_size": str(info.roi_size),
        "pixel_size_um": "" if info.pixel_size_um is None else repr(float(info.pixel_size_um)),
        "norm.method": "percentile",
        "norm.lower": repr(float(norm.lower)),
        "norm.upper": repr(float(norm.upper)),
        "norm.max_samples": str(int(norm.max_samples)),
        "output": "probabilities" if info.softmax else "logits",
        "tile_multiple": str(info.tile_multiple),
        "input_name": info.input_name,
        "output_name": info.output_name,
    }
    return {PREFIX + k: v for k, v in flat.items()}


def read_onnx_metadata(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` stored in an ONNX file's ``metadata_props``; ValueError naming the
    file when it is not a readable ONNX model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, truncated files, ...
        raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                         f"{exc})") from exc
    return ModelInfo.from_flat({p.key: p.value for p in model.metadata_props}, str(path))


def sidecar_path(path: str | Path) -> Path:
    """``<path>.json``: where the metadata of an engine / package file is kept."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | Path, info: ModelInfo) -> Path:
    """Write :func:`flat_metadata` as a JSON object of strings beside ``path``."""
    from ..atomic import write_json

    out = sidecar_path(path)
    write_json(out, flat_metadata(info))
    return out


def read_sidecar(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` in ``<path>.json`` (see :func:`write_sidecar`)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: metadata file of {path} not found")
    try:
        flat = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side}: not valid JSON ({exc})") from exc
    return ModelInfo.from_flat(flat, str(side))
