"""The ONNX Runtime backend: an exported ONNX model (``temseg export``), or a checkpoint's
model exported once into a cache keyed by its weights."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from ...checkpoint import SegmentationModel
from ...spec import read_onnx_metadata

__all__ = ["OnnxRuntimeBackend", "cached_int8_onnx", "cached_onnx", "onnxruntime_available"]

log = logging.getLogger("temseg.backends")


class OnnxRuntimeBackend:
    """An exported ONNX model (:func:`temseg.export.export_onnx`) run by ONNX Runtime.

    The model file carries its metadata (:class:`temseg.spec.ModelSpec`); a model exported
    without the softmax gets it applied here. On the CPU, ``threads`` intra-op threads
    (default: ``torch.get_num_threads()``); ``device="cuda"`` uses the CUDA execution provider
    when the installed onnxruntime has it.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.spec = read_onnx_metadata(self.path)
        self.num_classes = self.spec.num_classes
        self.precision = "int8" if self.spec.extra.get("dtype") == "int8" else "fp32"
        if self.precision == "int8":
            self.name = "onnxruntime-int8"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The CPU arena grew to ~750 MB for 8-tile batches; without it peak memory halves at
        # the same speed (measured in benchmarks/test_inference.py).
        opts.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(f"{self.path}: onnxruntime has no CUDA execution provider "
                                 "(install onnxruntime-gpu) ")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers)

    @classmethod
    def from_model(cls, model: SegmentationModel, device: str | torch.device = "cpu",
                   threads: int | None = None, cache_dir: str | Path | None = None
                   ) -> OnnxRuntimeBackend:
        """Export ``model`` (softmax embedded, :func:`cached_onnx`) and open it."""
        return cls(cached_onnx(model, cache_dir), device, threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        out = torch.from_numpy(self.session.run(None, {self.spec.input_name: x})[0])
        return out if self.spec.softmax else torch.softmax(out, dim=1)


def cached_onnx(model: SegmentationModel, cache_dir: str | Path | None = None) -> Path:
    """``model`` exported to ONNX (softmax embedded), once.

    The export is written to ``cache_dir/model.onnx`` when given; otherwise it is kept in
    ``$TEMSEG_CACHE_DIR`` (default ``~/.cache/temseg``) under ``onnx/<key>.onnx``, the key
    hashing the weights, the metadata and the torch version, so a model is exported once
    (15-30 s on a small CPU), not at every run. A corrupt cache entry is exported again; an
    unwritable cache falls back to a temporary folder.
    """
    from ...export.onnx import export_onnx

    if cache_dir is not None:
        return export_onnx(model, Path(cache_dir) / "model.onnx", softmax=True)
    path = _onnx_cache_path(model)
    if path is not None and path.is_file():
        try:
            read_onnx_metadata(path)
            return path
        except Exception:  # a corrupt cache entry: export again
            path.unlink(missing_ok=True)
    log.info("exporting the model to ONNX once (cached in %s)", path or "a temporary folder")
    try:
        if path is None:
            raise OSError("no cache folder")
        return export_onnx(model, path, softmax=True)
    except OSError:
        return export_onnx(model, Path(_tempdir()) / "model.onnx", softmax=True)


def cached_int8_onnx(model: SegmentationModel) -> Path:
    """``model``'s int8 export (:func:`temseg.export.quantize.quantize_onnx`), calibrated on
    the patches the checkpoint carries (``model.calibration``), made once beside
    :func:`cached_onnx`'s file. ValueError for a model without calibration patches."""
    from ...export.quantize import quantize_onnx

    if getattr(model, "calibration", None) is None:
        raise ValueError("this model carries no calibration patches (trained before temseg "
                         "kept them): export int8 with `temseg export --precision int8 "
                         "--calibration-data DATA`")
    import hashlib

    fp32 = cached_onnx(model)
    tiles = model.calibration.float().contiguous().numpy()
    key = hashlib.sha256(tiles.tobytes()).hexdigest()[:16]
    path = fp32.with_name(f"{fp32.stem}.int8-{key}.onnx")
    if path.is_file():
        try:
            if read_onnx_metadata(path).extra.get("dtype") == "int8":
                return path
        except Exception:  # a corrupt cache entry: quantise again
            pass
        path.unlink(missing_ok=True)
    log.info("quantising the model to int8 once, calibrated on its %d training patches",
             len(model.calibration))
    return quantize_onnx(fp32, path, tiles)


_TEMPDIRS: list[tempfile.TemporaryDirectory] = []


def _tempdir() -> str:
    tmp = tempfile.TemporaryDirectory(prefix="temseg-")
    _TEMPDIRS.append(tmp)  # removed at interpreter exit
    return tmp.name


def _onnx_cache_path(model: SegmentationModel) -> Path | None:
    """``<cache>/onnx/<sha256 of weights + metadata + torch version>.onnx`` (None when the
    cache folder cannot be created)."""
    import hashlib
    import json
    import os

    root = Path(os.environ.get("TEMSEG_CACHE_DIR") or Path.home() / ".cache" / "temseg")
    digest = hashlib.sha256()
    digest.update(json.dumps(model.metadata(), sort_keys=True, default=str).encode())
    digest.update(torch.__version__.encode())
    net = getattr(model.net, "_orig_mod", model.net)
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    try:
        (root / "onnx").mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return root / "onnx" / f"{digest.hexdigest()[:32]}.onnx"


def onnxruntime_available() -> bool:
    """True when onnx, onnxruntime and onnxscript (the exporter's dependency) import."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("onnx", "onnxruntime", "onnxscript"))
