"""The embedded C++ runtime (csrc/: Segmenter + backends) end to end, through the example
program ``temseg_segment`` and a host project that uses ``find_package(temseg)``.

* trivial backend: the C++ Segmenter's blended probabilities and labels are bitwise those of
  the Python tiler (``sliding_window_inference``) with the same per-pixel predictor;
* AOTInductor backend: labels of a real TEM image equal ``temseg predict --backend torch``
  (up to near-tie pixels, < 0.01%).

The C++ build is the one of ``make test-cpp`` (build/cpp, with -DTEMSEG_WITH_TORCH=ON); when
it is missing or lacks the AOTI backend this module configures and builds it (~1 min).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from temseg.checkpoint import SegmentationModel, save_checkpoint
from temseg.cli import main
from temseg.data.normalize import Normalization
from temseg.inference import sliding_window_inference
from temseg.models import UNetConfig, build_model
from temseg.spec import DEFAULT_OVERLAP

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cpp"
BIN = Path(sys.executable).parent
TEM_IMAGES = sorted((REPO.parent / "shared" / "data" / "tem-mouse-cc" / "images").glob("*.tif"))


def _tool(name: str) -> str | None:
    local = BIN / name
    return str(local) if local.is_file() else shutil.which(name)


def configure_args(build: Path) -> list[str]:
    """The CMake configure command of ``make test-cpp`` (with the AOTI backend)."""
    args = [_tool("cmake") or "cmake", "-S", str(REPO), "-B", str(build),
            "-DCMAKE_BUILD_TYPE=Release", "-DTEMSEG_BUILD_TESTS=ON",
            "-DTEMSEG_BUILD_PYTHON=OFF", "-DTEMSEG_WITH_TORCH=ON",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    ninja = _tool("ninja")
    if ninja:
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    return args


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n"
                             f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.fixture(scope="module")
def segment_exe() -> Path:
    if _tool("cmake") is None:
        pytest.skip("cmake not found (pip install cmake ninja)")
    cache = BUILD / "CMakeCache.txt"
    if not cache.is_file() or "TEMSEG_WITH_TORCH:BOOL=ON" not in cache.read_text():
        _run(configure_args(BUILD))
    _run([_tool("cmake") or "cmake", "--build", str(BUILD), "--target", "temseg_segment",
          "-j2"])
    return BUILD / "temseg_segment"


def compiled_backends(exe: Path) -> str:
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    return res.stderr.split("backends compiled in:")[-1].strip()


def write_pgm(path: Path, image: np.ndarray) -> Path:
    """Binary PGM: uint8 as is, uint16 big-endian."""
    maxval = 255 if image.dtype == np.uint8 else 65535
    data = image.astype(">u2").tobytes() if image.dtype == np.uint16 else image.tobytes()
    path.write_bytes(f"P5\n{image.shape[1]} {image.shape[0]}\n{maxval}\n".encode() + data)
    return path


def read_pgm(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    magic, w, h, maxval, data = raw.split(maxsplit=4)
    assert magic == b"P5" and int(maxval) == 255
    return np.frombuffer(data, np.uint8).reshape(int(h), int(w))


def python_intensity_tiler(image: np.ndarray, tile: int, n_classes: int = 5) -> np.ndarray:
    """The Python tiler with the trivial backend's predictor: (C, H, W) float32 probabilities.

    Score of class c: 1 / (1 + (x - mu_c)^2), mu_c = -1 + 2c / (C - 1), float32.
    """
    mus = torch.tensor([np.float32(-1) + np.float32(2 * c) / np.float32(n_classes - 1)
                        for c in range(n_classes)], dtype=torch.float32).view(1, -1, 1, 1)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        d = batch - mus
        return 1.0 / (1.0 + d * d)

    x = torch.from_numpy(Normalization()(image))[None, None]
    probs = sliding_window_inference(x, (tile, tile), 4, predictor, overlap=DEFAULT_OVERLAP,
                                     mode="gaussian", sigma_scale=0.125, padding_mode="reflect")
    return probs[0].numpy()


def synthetic(shape: tuple[int, int], dtype: type, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = np.sin(x / 13.0) * np.cos(y / 17.0) + 0.2 * rng.standard_normal(shape)
    top = 255 if dtype == np.uint8 else 4000
    return np.clip((base + 1.2) / 2.4 * top, 0, top).astype(dtype)


@pytest.mark.parametrize(("shape", "dtype", "tile"), [
    ((300, 260), np.uint8, 64),
    ((190, 333), np.uint16, 96),
    ((40, 50), np.uint8, 64),  # smaller than the tile: reflect padding
])
def test_trivial_backend_equals_python_tiler(segment_exe: Path, tmp_path: Path, shape, dtype,
                                             tile):
    image = synthetic(shape, dtype, seed=shape[0])
    pgm = write_pgm(tmp_path / "in.pgm", image)
    _run([str(segment_exe), "--backend", "intensity", "--tile", str(tile), "--batch", "3",
          "--input", str(pgm), "--output", str(tmp_path / "labels.pgm"), "--probs",
          str(tmp_path / "probs.f32")])
    probs = np.fromfile(tmp_path / "probs.f32", np.float32).reshape(5, *shape)
    labels = read_pgm(tmp_path / "labels.pgm")
    ref = python_intensity_tiler(image, tile)
    np.testing.assert_array_equal(probs, ref)  # bitwise: same grid, window, blending order
    np.testing.assert_array_equal(labels, ref.argmax(0))
    assert len(np.unique(labels)) >= 3


@pytest.fixture(scope="module")
def aoti_package(segment_exe: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, Path]:
    """(checkpoint, AOTInductor package) of a narrow random model, exported once (~1 min)."""
    if "aoti" not in compiled_backends(segment_exe):
        pytest.skip("temseg_segment was built without the AOTI backend (-DTEMSEG_WITH_TORCH=ON)")
    torch.manual_seed(0)
    model = SegmentationModel(build_model(UNetConfig(width=8, heads=2)), patch_size=128)
    with torch.no_grad():
        model.net.head.weight.mul_(40.0)  # labels that vary over the image
    folder = tmp_path_factory.mktemp("aoti")
    save_checkpoint(folder / "model.pt", model)
    package = folder / "model.pt2"
    assert main(["export", str(folder / "model.pt"), "--format", "aoti", "--out",
                 str(package), "--batch", "1", "4", "8"]) == 0
    return folder / "model.pt", package


@pytest.mark.skipif(not TEM_IMAGES, reason="real TEM images not found under "
                    "../shared/data/tem-mouse-cc/images (outside the repository)")
def test_aoti_backend_matches_temseg_predict_torch(segment_exe: Path, aoti_package,
                                                   tmp_path: Path):
    """C++ Segmenter + AOTInductor package vs `temseg predict --backend torch` on a real TEM
    image. Both blend softmax probabilities on the same grid; the AOTI kernels round
    differently from eager PyTorch (~1e-6), which can flip pixels whose two best classes
    tie, so up to 0.01% of the pixels may differ."""
    checkpoint, package = aoti_package
    image_path = TEM_IMAGES[0]
    image = tifffile.imread(image_path)
    pgm = write_pgm(tmp_path / "tem.pgm", image)
    res = _run([str(segment_exe), "--backend", "aoti", "--model", str(package), "--input",
                str(pgm), "--output", str(tmp_path / "cpp.pgm"), "--grey", "--threads", "2"])
    assert "tile 256" in res.stdout  # temseg.roi_size: 2x the patch, as `temseg predict`
    cpp = read_pgm(tmp_path / "cpp.pgm")
    assert main(["predict", str(checkpoint), str(image_path), "--out", str(tmp_path / "py"),
                 "--backend", "torch", "--amp", "off", "--no-progress"]) == 0
    py = tifffile.imread(tmp_path / "py" / f"{image_path.stem}_mask.tif")
    assert py.shape == cpp.shape == image.shape
    assert len(np.unique(py)) >= 2
    differ = int((py != cpp).sum())
    assert differ / py.size < 1e-4, f"{differ} of {py.size} pixels differ"


def test_find_package_consumer(segment_exe: Path, tmp_path: Path):
    """Install the build, then build csrc/examples as a separate project with
    find_package(temseg) and run it."""
    cmake = _tool("cmake") or "cmake"
    prefix = tmp_path / "prefix"
    _run([cmake, "--install", str(BUILD), "--prefix", str(prefix)])
    assert (prefix / "include" / "temseg" / "segmenter.hpp").is_file()
    build = tmp_path / "consumer"
    args = [cmake, "-S", str(REPO / "csrc" / "examples"), "-B", str(build),
            f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"]
    if _tool("ninja"):
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}"]
    _run(args)
    _run([cmake, "--build", str(build), "-j2"])
    exe = build / "temseg_segment"
    image = synthetic((120, 90), np.uint8, seed=7)
    pgm = write_pgm(tmp_path / "in.pgm", image)
    _run([str(exe), "--backend", "intensity", "--tile", "32", "--input", str(pgm), "--output",
          str(tmp_path / "out.pgm")], env={**os.environ})
    ref = python_intensity_tiler(image, 32)
    np.testing.assert_array_equal(read_pgm(tmp_path / "out.pgm"), ref.argmax(0))
    assert compiled_backends(exe) == compiled_backends(segment_exe)
