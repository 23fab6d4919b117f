"""int8 static post-training quantisation of an ONNX export, calibrated on training patches.

The convolutions (all but a few percent of the FLOPs) get int8 weights (per output channel,
symmetric) and uint8 activations, with scales from the activation ranges seen on calibration
patches; the attention (MatMul / Softmax), LayerNorm, resampling and the class softmax stay in
floating point. The result is a QDQ ONNX model (QuantizeLinear / DequantizeLinear pairs
around each convolution) that ONNX Runtime and OpenVINO both run with int8 kernels on CPUs
with VNNI (:func:`temseg.policy.cpu_has_vnni`).

    tiles = calibration_tiles("data/", spec)            # (N, 1, T, T) float32
    quantize_onnx("model.onnx", "model.int8.onnx", tiles)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..spec import ModelSpec, flat_metadata, read_onnx_metadata

__all__ = ["CALIBRATION_TILES", "calibration_tiles", "quantize_onnx"]

CALIBRATION_TILES = 32


def calibration_tiles(data: str | Path | Sequence, spec: ModelSpec,
                      count: int = CALIBRATION_TILES, seed: int = 0) -> np.ndarray:
    """``count`` normalised training patches (N, 1, P, P) float32, P the model's patch size.

    The images of ``data`` (a folder with images/ + masks/ as for training, or its loaded
    :class:`temseg.data.io.Sample` list) are brought to the model's pixel size as training
    does and cut by :func:`temseg.data.calibration.calibration_patches`. A folder that is
    not training data is a DataError naming it.
    """
    from ..data.calibration import calibration_patches
    from ..data.io import load_dataset
    from ..data.rescale import resample_samples

    if isinstance(data, (str, Path)):
        data = load_dataset(data, spec.classes)
    samples = resample_samples(list(data), spec.pixel_size_um)
    return calibration_patches(samples, spec.normalization, spec.patch_size, count, seed)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice on the root logger ("consider pre-processing"):
    not for temseg's users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over (N, 1, P, P) tiles, ``batch`` at a time."""

    def __init__(self, input_name: str, tiles: np.ndarray, batch: int = 4) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: tiles[i:i + batch]} for i in range(0, len(tiles), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(src: str | Path, dst: str | Path, tiles: np.ndarray,
                  method: str = "minmax") -> Path:
    """Quantise the temseg ONNX export ``src`` (float32, from :func:`export_onnx`) into
    ``dst`` (written atomically), calibrated on ``tiles`` (N, 1, P, P) float32.

    ``method``: "minmax" (the activation ranges seen) or "percentile" (99.999th percentile,
    robust to outliers). The metadata is ``src``'s with ``export.dtype`` "int8" and the
    calibration recorded. Raises ValueError naming ``src`` when it is not a float32 export.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ..atomic import atomic_path

    src, dst = Path(src), Path(dst)
    spec = read_onnx_metadata(src)
    if spec.extra.get("dtype", "float32") != "float32":
        raise ValueError(f"{src}: int8 quantisation needs a float32 export, this one is "
                         f"{spec.extra.get('dtype')}")
    calib = {"minmax": CalibrationMethod.MinMax,
             "percentile": CalibrationMethod.Percentile}[method]
    with atomic_path(dst) as tmp, _quiet_root_logger():
        quantize_static(str(src), str(tmp), _Reader(spec.input_name, tiles),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=calib,
                        extra_options={"CalibMovingAverage": False})
        proto = onnx.load(str(tmp))
        info = spec.replace(extra={**spec.extra, "dtype": "int8", "quantization": {
            "format": "QDQ", "ops": ["Conv"], "weights": "int8 per channel",
            "activations": "uint8", "calibration": method,
            "calibration_tiles": int(len(tiles))}})
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, flat_metadata(info))
        onnx.save(proto, str(tmp))
    return dst
