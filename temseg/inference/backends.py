"""Inference backends behind one small interface: ``backend(batch) -> scores``.

A backend takes a batch of normalised tiles (B, 1, th, tw) float32 (a CPU tensor) and returns
class probabilities (B, C, th, tw) float32 (a CPU tensor). Every backend feeds the same C++
tiler, so switching backends changes nothing else.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from ..checkpoint import SegmentationModel

if TYPE_CHECKING:
    from ..export.metadata import ModelInfo

log = logging.getLogger("temseg.backends")


class Backend(Protocol):
    """What the tiler calls."""

    name: str
    num_classes: int

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 1, th, tw) float32 normalised tiles -> (B, C, th, tw) float32 probabilities."""
        ...


class TorchBackend:
    """PyTorch eager (optionally ``torch.compile``d) on CPU or CUDA.

    On the CPU the model runs in channels-last memory format (3x faster convolutions with
    oneDNN here). ``amp``: autocast dtype (bf16 / fp16) or None for fp32;
    :func:`inference_amp` chooses it by the training policy.
    """

    name = "torch"

    def __init__(self, model: SegmentationModel, device: str | torch.device = "cpu",
                 compile: bool = False, amp: torch.dtype | None = None) -> None:
        if amp is not None:
            self.name = f"torch-{str(amp).removeprefix('torch.').replace('bfloat', 'bf')}"
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.num_classes = model.classes.num_classes
        self.amp = amp
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                logits = self.forward(x)
        else:
            logits = self.forward(x)
        return torch.softmax(logits.float(), dim=1).to("cpu")


class OnnxRuntimeBackend:
    """An exported ONNX model (:func:`temseg.export.export_onnx`) run by ONNX Runtime.

    The model file carries its metadata (:class:`temseg.export.ModelInfo`); a model exported
    without the softmax gets it applied here. On the CPU, ``threads`` intra-op threads
    (default: ``torch.get_num_threads()``); ``device="cuda"`` uses the CUDA execution provider
    when the installed onnxruntime has it.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        from ..export.metadata import read_onnx_metadata

        self.path = Path(path)
        self.info = read_onnx_metadata(self.path)
        self.num_classes = self.info.num_classes
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
        """Export ``model`` (softmax embedded) and open it.

        The export is written to ``cache_dir/model.onnx`` when given; otherwise it is kept in
        ``$TEMSEG_CACHE_DIR`` (default ``~/.cache/temseg``) under ``onnx/<key>.onnx``, the
        key hashing the weights, the metadata and the torch version, so a model is exported
        once (15-30 s on a small CPU), not at every run. An unwritable cache falls back to
        a temporary folder.
        """
        from ..export.onnx import export_onnx

        if cache_dir is not None:
            return cls(export_onnx(model, Path(cache_dir) / "model.onnx", softmax=True),
                       device, threads)
        path = _onnx_cache_path(model)
        if path is not None and path.is_file():
            try:
                return cls(path, device, threads)
            except Exception:  # a corrupt cache entry: export again
                path.unlink(missing_ok=True)
        try:
            if path is None:
                raise OSError("no cache folder")
            out = export_onnx(model, path, softmax=True)
        except OSError:
            out = export_onnx(model, Path(_tempdir()) / "model.onnx", softmax=True)
        return cls(out, device, threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        out = torch.from_numpy(self.session.run(None, {self.info.input_name: x})[0])
        return out if self.info.softmax else torch.softmax(out, dim=1)


class TensorRTBackend:
    """A serialised TensorRT engine (:func:`temseg.export.tensorrt.build_engine`) on a CUDA
    device; metadata from ``<engine>.json``. Needs the ``tensorrt`` package and a GPU."""

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str | torch.device = "cuda") -> None:
        from ..export.tensorrt import TensorRTRunner

        self.runner = TensorRTRunner(path, device)
        self.info = self.runner.info
        self.num_classes = self.info.num_classes

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.runner(batch)
        out = out if self.info.softmax else torch.softmax(out.float(), dim=1)
        return out.to("cpu", torch.float32)


BACKENDS = ("torch", "onnxruntime", "tensorrt")

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


AMP_CHOICES = ("auto", "bf16", "off")


def inference_amp(device: str | torch.device = "cpu", amp: str = "off"
                  ) -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None, reason) of the torch backend. ``amp``: "off" (fp32), "bf16"
    (forced) or "auto": the training policy (:func:`temseg.train.policy.choose_precision`):
    bf16 on CPUs whose bf16 convolutions are measured > 1.1x faster than fp32, never on
    AVX2-only CPUs; bf16 (or fp16) on CUDA. On held-out mice (tem-mouse-cc) bf16 inference
    changed 0.09 % of the labels and mean Dice by -0.0001, at 1.8x the fp32 speed."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "off":
        return None, "fp32"
    from ..train.policy import choose_precision

    precision = choose_precision(torch.device(device), amp)
    return precision.dtype, precision.reason


def default_backend(device: str | torch.device = "cpu", amp: str = "off") -> str:
    """The backend ``temseg predict`` uses when none is given.

    CPU: "torch" when ``amp`` resolves to bf16 autocast (:func:`inference_amp`: 1.8x fp32
    and ONNX Runtime on whole TEM images on an AVX512-BF16 EPYC), else "onnxruntime" when
    installed, since fp32 ONNX Runtime beats fp32 torch there (measured on a 2-core AVX2 CPU,
    256 px tiles: 1.65x torch eager channels-last on a batch of the default ResUNet, 1.78x on
    whole slides in ``benchmarks/test_backends.py``; docs/deployment.md); "torch" otherwise
    and on GPUs (TensorRT needs an engine built beforehand).
    """
    if torch.device(device).type != "cpu":
        return "torch"
    if inference_amp(device, amp)[0] is None and onnxruntime_available():
        return "onnxruntime"
    return "torch"


def make_backend(name: str, model: SegmentationModel, device: str | torch.device = "cpu",
                 amp: str = "off", **kwargs) -> Backend:
    """A backend by name (see ``BACKENDS``; "auto" is :func:`default_backend`).

    ``amp`` ("off" | "bf16" | "auto", see :func:`inference_amp`) applies to the torch
    backend. "onnxruntime" exports ``model`` to a temporary ONNX file (``path=`` opens an
    existing export instead); "tensorrt" needs ``path=`` an engine file.
    """
    if name == "auto":
        name = default_backend(device, amp)
    if name == "torch":
        dtype, reason = inference_amp(device, amp)
        log.info("torch backend on %s: %s", device, reason)
        return TorchBackend(model, device, amp=dtype, **kwargs)
    if name == "onnxruntime":
        if kwargs.get("path") is not None:
            return OnnxRuntimeBackend(kwargs.pop("path"), device, **kwargs)
        kwargs.pop("path", None)
        return OnnxRuntimeBackend.from_model(model, device, **kwargs)
    if name == "tensorrt":
        if kwargs.get("path") is None:
            raise ValueError("the tensorrt backend needs an engine: build one with `temseg "
                             "export MODEL --format tensorrt --out X.engine` and pass X.engine")
        return TensorRTBackend(kwargs["path"], device)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def open_for_predict(path: str | Path, backend: str = "auto", device: str | torch.device = "cpu",
                     amp: str = "off") -> tuple[SegmentationModel | ModelInfo, Backend]:
    """Open a model for ``temseg predict``: (model or its exported metadata, backend).

    ``path`` is a checkpoint / run folder (any backend; onnxruntime exports it on the fly),
    an ``.onnx`` export (onnxruntime) or a TensorRT engine ``.engine`` / ``.plan`` with its
    ``.json`` metadata (tensorrt). The first element carries ``normalization``, ``classes``,
    ``patch_size`` and ``pixel_size_um``. ``amp``: see :func:`inference_amp` (torch only).
    """
    from ..checkpoint import load_model
    from ..export.metadata import read_sidecar

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if backend not in ("auto", "onnxruntime"):
            raise ValueError(f"{path}: an ONNX file runs with --backend onnxruntime, "
                             f"not {backend}")
        ort_backend = OnnxRuntimeBackend(path, device)
        return ort_backend.info, ort_backend
    if suffix in (".engine", ".plan", ".trt"):
        if backend not in ("auto", "tensorrt"):
            raise ValueError(f"{path}: a TensorRT engine runs with --backend tensorrt, "
                             f"not {backend}")
        read_sidecar(path)  # clear error before touching TensorRT / CUDA
        trt_backend = TensorRTBackend(path, device if torch.device(device).type == "cuda"
                                      else "cuda")
        return trt_backend.info, trt_backend
    model = load_model(path, device)
    return model, make_backend(backend, model, device, amp=amp)
