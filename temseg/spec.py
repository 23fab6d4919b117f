"""The model description: :class:`ModelSpec`, everything needed to apply a model besides its
weights and a backend to run them (normalisation, class table, patch and pixel size,
inference tile, architecture), and its serialised forms.

A spec is read from a checkpoint (:meth:`ModelSpec.from_checkpoint`), an ONNX file's
metadata (:func:`read_onnx_metadata`) or an engine's / package's sidecar
(:func:`read_sidecar`); :func:`read_spec` picks by the file. Exports store one flat
``str -> str`` map everywhere:

* ONNX: the model's ``metadata_props``;
* AOTInductor packages: the package metadata (``AOTIModelPackageLoader::get_metadata()``);
* TensorRT engines: a JSON object of strings in ``<engine>.json`` beside the engine.

The flat keys (``temseg.*``) are what the C++ runtime reads (no JSON parser needed beyond a flat
object of strings); ``temseg.metadata`` additionally holds the full nested JSON
(:meth:`temseg.SegmentationModel.metadata` plus export details) for Python tools.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.normalize import Normalization
from .labels import ClassTable

__all__ = [
    "ENGINE_SUFFIXES",
    "FORMAT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ModelSpec",
    "DEFAULT_OVERLAP",
    "default_roi_size",
    "flat_metadata",
    "read_onnx_metadata",
    "read_sidecar",
    "read_spec",
    "sidecar_path",
    "write_sidecar",
]

FORMAT_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "scores"
PREFIX = "temseg."
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


# temseg's default tile overlap (MONAI's is 0.25, kept by sliding_window_inference): on the
# held-out mice of the developer set 0.125 changed mean Dice by -0.0018 for 1.36x fewer
# executed FLOPs per slide pixel at 512 px tiles (benchmarks/window_study.py,
# docs/benchmarks.md "Less wasted overlap")
DEFAULT_OVERLAP = 0.125


def default_roi_size(patch_size: int) -> int:
    """Inference tile side when none is given: twice the training patch. The model is selected
    on 512 px validation crops and its bottleneck attention gains from the context: on held-out
    mice (tem-mouse-cc) 512 px tiles gave mean Dice 0.856 against 0.812 with 256 px tiles.
    Exports record it (``temseg.roi_size``) so that every runtime tiles alike."""
    return 2 * int(patch_size)


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to apply a model to raw images, besides its weights.

    Attributes: ``normalization``, ``classes``, ``patch_size`` (training patch side),
    ``pixel_size_um`` (of the training data, None when unknown), ``model_config`` (the
    architecture, :class:`temseg.models.UNetConfig` as a dict), and for exports the graph
    contract: the graph maps
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
    def from_model(cls, model: Any, softmax: bool = False, **extra: Any) -> ModelSpec:
        """From a :class:`temseg.SegmentationModel` (``extra``: export details to record)."""
        net = getattr(model.net, "_orig_mod", model.net)
        return cls(model.normalization, model.classes, int(model.patch_size),
                   model.pixel_size_um, softmax, int(net.multiple),
                   model_config=net.config.to_dict(), extra=dict(extra))

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> ModelSpec:
        """From a checkpoint's metadata (:func:`temseg.checkpoint.read_checkpoint`)."""
        source = str(ckpt.get("path", "checkpoint"))
        try:
            from .models import UNetConfig

            config = UNetConfig.from_dict(ckpt["model_config"])
            return cls(Normalization.from_dict(ckpt["normalization"]),
                       ClassTable.from_dict(ckpt["classes"]), int(ckpt["patch_size"]),
                       ckpt.get("pixel_size_um"), tile_multiple=2 ** config.depth,
                       model_config=config.to_dict())
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: invalid temseg checkpoint metadata: {exc}") from exc

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with ``changes`` (dataclass field names)."""
        return dataclasses.replace(self, **changes)

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
    def from_flat(cls, flat: dict[str, str], source: str = "model") -> ModelSpec:
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


def flat_metadata(info: ModelSpec) -> dict[str, str]:
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


def read_onnx_metadata(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` stored in an ONNX file's ``metadata_props``; ValueError naming the
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
    return ModelSpec.from_flat({p.key: p.value for p in model.metadata_props}, str(path))


def sidecar_path(path: str | Path) -> Path:
    """``<path>.json``: where the metadata of an engine / package file is kept."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | Path, info: ModelSpec) -> Path:
    """Write :func:`flat_metadata` as a JSON object of strings beside ``path``."""
    from .atomic import write_json

    out = sidecar_path(path)
    write_json(out, flat_metadata(info))
    return out


def read_sidecar(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` in ``<path>.json`` (see :func:`write_sidecar`)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: metadata file of {path} not found")
    try:
        flat = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side}: not valid JSON ({exc})") from exc
    return ModelSpec.from_flat(flat, str(side))


def read_spec(path: str | Path) -> ModelSpec:
    """The spec of a model file: an ``.onnx`` export (its metadata), a TensorRT engine
    (``.engine`` / ``.plan`` / ``.trt``: its sidecar), else a checkpoint or run folder."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return read_onnx_metadata(path)
    if suffix in ENGINE_SUFFIXES or suffix == ".pt2":
        return read_sidecar(path)
    from .checkpoint import read_checkpoint

    return ModelSpec.from_checkpoint(read_checkpoint(path))
