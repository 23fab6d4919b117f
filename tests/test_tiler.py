"""Python-level tests of the C++ tiler binding (temseg._C) against MONAI and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from temseg import _C
from temseg.inference import segment_slide, sliding_window_inference


def monai_origins(h: int, w: int, roi: tuple[int, int], overlap: float) -> np.ndarray:
    """MONAI's window origins in unpadded coordinates (inputs padded by diff // 2 before)."""
    padded = (max(h, roi[0]), max(w, roi[1]))
    interval = _get_scan_interval(padded, roi, 2, (overlap, overlap))
    slices = dense_patch_slices(padded, roi, interval)
    pad = np.array([(padded[0] - h) // 2, (padded[1] - w) // 2])
    return np.array([[s[0].start, s[1].start] for s in slices], dtype=np.int64) - pad


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize(
    ("h", "w", "roi"),
    [(1000, 777, (256, 256)), (64, 64, (64, 64)), (1, 50, (1, 8)), (5, 9, (16, 16)),
     (300, 20, (32, 48)), (257, 129, (128, 64)), (7, 7, (3, 2))],
)
def test_grid_matches_monai(h: int, w: int, roi: tuple[int, int], overlap: float) -> None:
    grid = _C.TileGrid(h, w, roi, overlap)
    np.testing.assert_array_equal(grid.origins(), monai_origins(h, w, roi, overlap))
    assert len(grid) == grid.n_rows * grid.n_cols
    assert grid.origins().dtype == np.int64


def test_grid_pixel_overlap_and_attributes() -> None:
    grid = _C.TileGrid(1000, 600, 256, overlap_px=64)
    assert grid.stride == (192, 192)
    np.testing.assert_array_equal(grid.row_starts, [0, 192, 384, 576, 744])
    np.testing.assert_array_equal(grid.col_starts, [0, 192, 344])
    assert grid.final_row_after(0) == 0
    assert grid.final_row_after(2) == 384
    assert grid.final_row_after(grid.n_rows) == 1000
    small = _C.TileGrid(5, 9, 16)
    assert small.pad_before == (5, 3)
    np.testing.assert_array_equal(small.origins(), [[-5, -3]])


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (16, 16), (64, 48), (256, 256), (33, 97)])
@pytest.mark.parametrize("sigma", [0.125, 0.25, 0.06])
def test_gaussian_window_matches_monai(size: tuple[int, int], sigma: float) -> None:
    ref = compute_importance_map(size, mode="gaussian", sigma_scale=sigma).numpy()
    got = _C.make_window(size, "gaussian", sigma)
    assert got.dtype == np.float32 and got.shape == size
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_constant_and_cosine_windows() -> None:
    np.testing.assert_array_equal(_C.make_window((8, 5), "constant"),
                                  compute_importance_map((8, 5), mode="constant").numpy())
    w = _C.make_window((64, 32), "cosine")
    assert w.min() >= 1e-3 and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-7)
    hann = [0.5 * (1 - np.cos(2 * np.pi * (np.arange(n) + 1) / (n + 1))) for n in (64, 32)]
    np.testing.assert_allclose(w, np.maximum(np.outer(*hann), 1e-3), atol=1e-6)
    np.testing.assert_allclose(_C.make_window(5, "gaussian", (0.1, 0.3)),
                               compute_importance_map((5, 5), "gaussian", (0.1, 0.3)).numpy(),
                               atol=1e-6)


def _np_tiles(img: np.ndarray, origins: np.ndarray, tile: tuple[int, int], mode: str,
              offset: float, scale: float, cval: float = 0.0) -> np.ndarray:
    pad = max(tile) + max(img.shape)
    kw = {"constant_values": cval} if mode == "constant" else {}
    p = np.pad(img.astype(np.float32), pad, mode=mode, **kw)
    out = [p[y + pad : y + pad + tile[0], x + pad : x + pad + tile[1]] for y, x in origins]
    return ((np.stack(out) - np.float32(offset)) * np.float32(scale))[:, None]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "constant"])
def test_extract_matches_numpy_pad(dtype: type, mode: str) -> None:
    rng = np.random.default_rng(0)
    big = (rng.random((40, 60)) * 250).astype(dtype)
    img = big[3:33, 7:52]  # strided view: row stride 60, no copy needed
    assert not img.flags.c_contiguous
    origins = np.array([[-7, -9], [0, 0], [20, 30], [25, -3], [-40, 50], [5, 10]])
    got = _C.extract_tiles(img, origins, (12, 16), offset=3.0, scale=0.5, pad_mode=mode,
                           cval=7.0)
    ref = _np_tiles(img, origins, (12, 16), mode, 3.0, 0.5, cval=7.0)
    assert got.shape == (6, 1, 12, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_extract_multichannel_out_and_threads() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((3, 50, 41), dtype=np.float32)
    origins = _C.TileGrid(50, 41, 16, 0.5).origins()
    out = np.full((len(origins), 3, 16, 16), np.nan, dtype=np.float32)
    res = _C.extract_tiles(img, origins, 16, out=out, num_threads=3)
    assert res is out or np.shares_memory(res, out)
    for c in range(3):
        np.testing.assert_array_equal(out[:, c : c + 1],
                                      _C.extract_tiles(img[c], origins, 16, num_threads=1))
    y, x = origins[4]
    np.testing.assert_array_equal(out[4], img[:, y : y + 16, x : x + 16])


def _identity_scores(img: np.ndarray, origins: np.ndarray, tile: int, n_classes: int) -> np.ndarray:
    t = _C.extract_tiles(img, origins, tile)
    return np.ascontiguousarray(np.concatenate([t * (c + 1) - c for c in range(n_classes)], 1))


def test_accumulator_streaming_equals_in_memory() -> None:
    rng = np.random.default_rng(2)
    h, w, tile, n_classes = 1500, 70, 32, 5
    img = rng.random((h, w), dtype=np.float32)
    grid = _C.TileGrid(h, w, tile, 0.25)
    full = _C.BandAccumulator(h, w, tile, n_classes, "gaussian", num_threads=1)
    stream = _C.BandAccumulator(h, w, tile, n_classes, "gaussian", num_threads=2)
    origins = grid.origins()
    full.add(_identity_scores(img, origins, tile, n_classes), origins)
    ref_p, ref_l = full.finalize_until(h, probs=True, labels=True)
    parts_p, parts_l, max_cap = [], [], 0
    for k in range(grid.n_rows):
        o = origins[k * grid.n_cols : (k + 1) * grid.n_cols]
        stream.add(_identity_scores(img, o, tile, n_classes), o)
        max_cap = max(max_cap, stream.capacity_rows, stream.buffered_rows)
        p, lab = stream.finalize_until(grid.final_row_after(k + 1), probs=True, labels=True)
        parts_p.append(p)
        parts_l.append(lab)
    assert max_cap <= tile
    got_p, got_l = np.concatenate(parts_p, 1), np.concatenate(parts_l, 0)
    np.testing.assert_array_equal(got_p, ref_p)
    np.testing.assert_array_equal(got_l, ref_l)
    assert ref_p.shape == (n_classes, h, w) and ref_l.dtype == np.uint8
    np.testing.assert_array_equal(ref_l, ref_p.argmax(0))
    for c in range(n_classes):  # identity predictor -> reconstruction
        np.testing.assert_allclose(ref_p[c], img * (c + 1) - c, rtol=1e-5, atol=1e-5)


def test_streaming_slide_matches_sliding_window() -> None:
    """The slide pipeline (panels, fixed normalisation) blends exactly what the in-memory
    sliding window blends: the same tile loop (temseg.inference.tiles)."""
    rng = np.random.default_rng(3)
    img = (rng.random((300, 90)) * 255).astype(np.uint8)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.flip(-1), -x, x.roll(2, -2), x * 0.5], 1)

    res = segment_slide(predictor, img, None, roi_size=48, overlap=0.5, sw_batch_size=3,
                        normalization=(100, 0.01), return_arrays=True, return_probs=True,
                        progress=False, panel_width=32, out_tile=32)
    assert res.panels == 3
    x = (torch.from_numpy(img).float()[None, None] - 100) * 0.01
    ref = sliding_window_inference(x, 48, 3, predictor, overlap=0.5)[0].numpy()
    np.testing.assert_allclose(res.probs, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(res.labels, res.probs.argmax(0))
    small = segment_slide(predictor, img[:5, :7], None, roi_size=16, normalization=(100, 0.01),
                          return_arrays=True, return_probs=True, progress=False)
    ref_s = sliding_window_inference(x[..., :5, :7], 16, 1, predictor, padding_mode="reflect")
    np.testing.assert_allclose(small.probs, ref_s[0].numpy(), atol=1e-6)


def test_bad_inputs_raise_value_error() -> None:
    img = np.zeros((20, 20), np.float32)
    o = np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match="dtype must be uint8, uint16 or float32, got float64"):
        _C.extract_tiles(img.astype(np.float64), o, 8)
    with pytest.raises(ValueError, match=r"origins must have shape \(n, 2\), got \(1, 3\)"):
        _C.extract_tiles(img, np.zeros((1, 3), np.int64), 8)
    with pytest.raises(ValueError, match="origins must have an integer dtype"):
        _C.extract_tiles(img, np.zeros((1, 2), np.float32), 8)
    with pytest.raises(ValueError, match=r"image must have shape \(H, W\) or \(C, H, W\)"):
        _C.extract_tiles(np.zeros(5, np.float32), o, 8)
    with pytest.raises(ValueError, match="last-axis stride"):
        _C.extract_tiles(img[:, ::2], o, 8)
    with pytest.raises(ValueError, match="out must have shape"):
        _C.extract_tiles(img, o, 8, out=np.zeros((1, 1, 8, 9), np.float32))
    with pytest.raises(ValueError, match="unknown pad mode"):
        _C.extract_tiles(img, o, 8, pad_mode="wrap")
    with pytest.raises(ValueError, match="overlap must be in"):
        _C.TileGrid(10, 10, 4, 1.0)
    with pytest.raises(ValueError, match="unknown window mode"):
        _C.make_window(8, "box")
    with pytest.raises(ValueError, match=r"window must have shape \(8, 8\)"):
        _C.BandAccumulator(20, 20, 8, 2, np.ones((8, 7), np.float32))
    acc = _C.BandAccumulator(20, 20, 8, 2, "cosine")
    tiles = np.ones((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"tiles must have shape \(n, 2, 8, 8\)"):
        acc.add(np.ones((1, 3, 8, 8), np.float32), o)
    with pytest.raises(ValueError, match="tiles dtype must be float32"):
        acc.add(tiles.astype(np.float64), o)
    with pytest.raises(ValueError, match="C-contiguous"):
        acc.add(np.ones((1, 2, 8, 16), np.float32)[..., ::2], o)
    with pytest.raises(ValueError, match="origins has 2 rows but tiles has 1"):
        acc.add(tiles, np.zeros((2, 2), np.int64))
    acc.add(tiles, o)
    acc.finalize_until(6)
    with pytest.raises(ValueError, match="already released"):
        acc.add(tiles, np.array([[4, 0]]))
    with pytest.raises(ValueError, match="outside"):
        acc.finalize_until(3)
