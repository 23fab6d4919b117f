"""AOTInductor packages for the C++ runtime (``csrc/backends``, ``temseg::aoti``).

:func:`export_aoti` compiles the model ahead of time with ``torch.export`` +
``torch._inductor.aoti_compile_and_package`` into a ``.pt2`` package that libtorch's
``torch::inductor::AOTIModelPackageLoader`` loads without Python. The package maps
(B, 1, H, W) float32 normalised tiles to (B, C, H, W) float32 scores (probabilities with
``softmax=True``), B dynamic in [1, max_batch] and H, W dynamic multiples of the tile
multiple; the flat ``temseg.*`` metadata (:mod:`temseg.spec`) is stored in the
package (``loader.get_metadata()``) and in ``<package>.json``.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..spec import ModelSpec, flat_metadata, write_sidecar
from .onnx import ExportWrapper, reference_ops

__all__ = ["export_aoti", "load_aoti"]

log = logging.getLogger("temseg.export.aoti")


def export_aoti(model: Any, path: str | Path, *, softmax: bool = True,
                sample_tile: int | None = None, max_batch: int = 16, max_tile: int = 1024,
                dynamic_tiles: bool = True) -> Path:
    """Compile ``model`` (a :class:`temseg.SegmentationModel`) into an AOTInductor package.

    Args:
        model: the trained model (compiled for the CPU from an fp32 copy in eval mode).
        path: output package (``.pt2``).
        softmax: embed the softmax (default True: the C++ runtime then blends probabilities
            exactly like the Python tiler).
        sample_tile: tile side used for tracing (default: the model's patch size).
        max_batch, max_tile: upper bounds of the dynamic batch / tile dims.
        dynamic_tiles: False fixes H = W = ``sample_tile`` (faster code, one tile size).

    Returns:
        ``path``. Compiling takes about a minute for a small model on 2 CPU cores.
    """
    import copy

    from torch._inductor import aoti_compile_and_package

    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"{path}: an AOTInductor package must end in .pt2")
    net = getattr(model.net, "_orig_mod", model.net)
    multiple = int(net.multiple)
    tile = sample_tile or max(multiple, (int(model.patch_size) // multiple) * multiple)
    if tile % multiple:
        raise ValueError(f"{path}: sample_tile {tile} is not a multiple of {multiple}")
    wrapper = ExportWrapper(copy.deepcopy(net).cpu().eval().float(), softmax)
    sample = torch.zeros(2, 1, tile, tile)
    dim = torch.export.Dim
    shapes: dict[int, Any] = {0: dim("batch", min=1, max=max_batch)}
    if dynamic_tiles:
        shapes[2] = multiple * dim("h_blocks", min=1, max=max_tile // multiple)
        shapes[3] = multiple * dim("w_blocks", min=1, max=max_tile // multiple)
    info = ModelSpec.from_model(model, softmax=softmax, format="aoti",
                                torch_version=torch.__version__, max_batch=max_batch,
                                tile=tile if not dynamic_tiles else None)
    t0 = time.perf_counter()
    with reference_ops("sdpa"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(wrapper, (sample,), dynamic_shapes={"image": shapes},
                                      strict=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        aoti_compile_and_package(
            program, package_path=str(path),
            inductor_configs={"aot_inductor.metadata": flat_metadata(info)})
    log.info("%s: AOTInductor package compiled in %.1f s", path, time.perf_counter() - t0)
    write_sidecar(path, info)
    return path


def load_aoti(path: str | Path) -> Any:
    """Load a package in Python (``torch._inductor.aoti_load_package``): a callable
    (B, 1, H, W) -> (B, C, H, W)."""
    from torch._inductor import aoti_load_package

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: AOTInductor package not found")
    return aoti_load_package(str(path))
