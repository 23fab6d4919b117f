from __future__ import annotations

import numpy as np
import pytest

from temseg.data import Augment, CenterCropDataset, PatchDataset, center_crop
from temseg.data.io import Sample
from temseg.data.patches import ELASTIC_SPACING, elastic_field
from temseg.train.split import split_samples

NO_AUG = None
GEOMETRY_ONLY = Augment(free_rotation=0.0, contrast=0.0, brightness=0.0, noise=0.0)


def test_patch_origins_cover_full_valid_range():
    img = np.zeros((300, 400), np.float32)
    ds = PatchDataset([img], [img.astype(np.uint8)], patch_size=64, patches_per_image=4000,
                      augment=NO_AUG)
    ys, xs = [], []
    for i in range(len(ds)):
        _, y0, x0 = ds.origin(i, np.random.default_rng([0, 0, i]))
        ys.append(y0)
        xs.append(x0)
    assert min(ys) == 0 and max(ys) == 300 - 64
    assert min(xs) == 0 and max(xs) == 400 - 64


def test_patch_content_matches_origin():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(100, 120)).astype(np.float32)
    lab = rng.integers(0, 5, (100, 120)).astype(np.uint8)
    ds = PatchDataset([img], [lab], patch_size=32, patches_per_image=10, augment=NO_AUG, seed=3)
    for i in range(10):
        x, y = ds[i]
        _, y0, x0 = ds.origin(i, np.random.default_rng([3, 0, i]))
        np.testing.assert_array_equal(x[0].numpy(), img[y0:y0 + 32, x0:x0 + 32])
        np.testing.assert_array_equal(y.numpy(), lab[y0:y0 + 32, x0:x0 + 32])


def test_small_images_are_reflect_padded():
    img = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    lab = (img % 5).astype(np.uint8)
    ds = PatchDataset([img], [lab], patch_size=64, patches_per_image=3)
    x, y = ds[0]
    assert x.shape == (1, 64, 64) and y.shape == (64, 64)
    assert set(np.unique(y.numpy())) <= set(range(5))
    crop = center_crop(img, 64)
    assert crop.shape == (64, 64)
    np.testing.assert_array_equal(crop[22:42, 17:47], img)  # original sits in the middle


def test_geometric_augmentation_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, (128, 128)).astype(np.uint8)
    img = lab.astype(np.float32) * 10
    ds = PatchDataset([img], [lab], 48, 40, augment=GEOMETRY_ONLY)
    for i in range(40):
        x, y = ds[i]
        np.testing.assert_array_equal(x[0].numpy(), y.numpy() * 10.0)


def test_free_rotation_keeps_alignment():
    # piecewise-constant blocks: away from block edges bilinear == nearest
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 5, (16, 16)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
    img = lab.astype(np.float32) * 10
    aug = Augment(free_rotation=1.0, contrast=0, brightness=0, noise=0)
    ds = PatchDataset([img], [lab], 96, 20, augment=aug)
    for i in range(20):
        x, y = ds[i]
        agree = np.isclose(x[0].numpy(), y.numpy() * 10.0, atol=1e-3).mean()
        assert agree > 0.85, agree


def test_scaling_keeps_alignment_and_zooms():
    """Blocks of 16 px seen through zooms in [0.5, 2]: image and labels stay aligned, and
    the mean run length of equal labels along rows follows the zoom."""
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 5, (24, 24)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
    img = lab.astype(np.float32) * 10
    aug = Augment(free_rotation=1.0, scale=2.0, contrast=0, brightness=0, noise=0)
    ds = PatchDataset([img], [lab], 96, 30, augment=aug)
    assert ds.crop >= int(96 * 2 * np.sqrt(2))  # zoomed out and rotated: still real pixels
    runs = []
    for i in range(30):
        x, y = ds[i]
        agree = np.isclose(x[0].numpy(), y.numpy() * 10.0, atol=1e-3).mean()
        assert agree > 0.8, agree
        yy = y.numpy()
        runs.append(yy.size / max(1, int((np.diff(yy, axis=1) != 0).sum())))
    assert max(runs) / min(runs) > 2.0  # zooms span a factor of ~4: structure sizes vary
    with pytest.raises(ValueError, match="scale must be >= 1"):
        PatchDataset([img], [lab], 96, 1, augment=Augment(scale=0.8))


def test_items_reproducible_and_epoch_dependent():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 200)).astype(np.float32)
    lab = rng.integers(0, 5, (200, 200)).astype(np.uint8)
    a = PatchDataset([img], [lab], 64, 5, seed=7)
    b = PatchDataset([img], [lab], 64, 5, seed=7)
    np.testing.assert_array_equal(a[2][0], b[2][0])
    b.set_epoch(1)
    assert not np.array_equal(a[2][0], b[2][0])


def test_center_crop_dataset_is_deterministic():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(90, 70)).astype(np.float32)
    lab = rng.integers(0, 5, (90, 70)).astype(np.uint8)
    ds = CenterCropDataset([img], [lab], 64)
    x, y = ds[0]
    np.testing.assert_array_equal(x[0].numpy(), img[13:77, 3:67])
    np.testing.assert_array_equal(y.numpy(), lab[13:77, 3:67])


def _sample(name: str, group: str) -> Sample:
    z = np.zeros((4, 4), np.uint8)
    return Sample(name, z, z, None, group)


def test_split_by_group_never_by_image():
    samples = [_sample(f"sub-{g}_s{i}", f"sub-{g}") for g in "ABCDEFG" for i in range(2)]
    train, val = split_samples(samples, 0.3, seed=0)
    vg, tg = {s.group for s in val}, {s.group for s in train}
    assert vg and tg and not (vg & tg) and len(val) + len(train) == len(samples)
    train, val = split_samples(samples, val_groups=("sub-B",))
    assert {s.name for s in val} == {"sub-B_s0", "sub-B_s1"}
    with pytest.raises(ValueError, match="not in the data"):
        split_samples(samples, val_groups=("sub-Z",))


def test_gamma_and_blur_keep_the_range_and_sometimes_apply():
    import numpy as np

    from temseg.data.patches import Augment, _gamma_and_blur

    img = np.random.default_rng(0).random((64, 64), dtype=np.float32) * 3 - 1
    aug = Augment(gamma=1.5, blur=1.0)
    changed = 0
    for seed in range(40):
        out = _gamma_and_blur(img, aug, np.random.default_rng(seed))
        assert out.shape == img.shape and out.dtype == np.float32
        assert out.min() >= img.min() - 1e-5 and out.max() <= img.max() + 1e-5
        changed += not np.array_equal(out, img)
    assert 5 < changed < 35  # p 0.3 and 0.2: some patches change, most do not
    off = Augment()
    assert all(np.array_equal(_gamma_and_blur(img, off, np.random.default_rng(s)), img)
               for s in range(10))


def test_gamma_probability_sets_the_share_of_curved_patches():
    """With contrast, brightness and noise off, a patch differs from its plain copy exactly
    when it got the gamma curve: the share follows ``gamma_p`` (0, about 0.5, 1)."""
    rng = np.random.default_rng(6)
    img = rng.uniform(-1, 1, (128, 128)).astype(np.float32)
    lab = np.zeros((128, 128), np.uint8)
    plain = dict(free_rotation=0.0, contrast=0.0, brightness=0.0, noise=0.0)
    shares = []
    for p in (0.0, 0.5, 1.0):
        a = PatchDataset([img], [lab], 64, 200, augment=Augment(**plain), seed=1)
        b = PatchDataset([img], [lab], 64, 200, augment=Augment(**plain, gamma=2.5, gamma_p=p),
                         seed=1)
        shares.append(np.mean([not np.allclose(a[i][0], b[i][0]) for i in range(200)]))
    assert shares[0] == 0.0 and 0.4 < shares[1] < 0.6 and shares[2] > 0.98, shares


def test_free_rotation_probability_sets_the_share_of_resampled_patches():
    """With intensity jitter off, a patch of an integer-valued image holds non-integer values
    exactly when the free rotation (bilinear) resampled it: the share follows
    ``free_rotation`` (0, about 0.2, 1); the rest are exact crops."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 50, (160, 160)).astype(np.float32)
    lab = np.zeros((160, 160), np.uint8)
    shares = []
    for p in (0.0, 0.2, 1.0):
        ds = PatchDataset([img], [lab], 64, 300, seed=2, augment=Augment(
            free_rotation=p, contrast=0.0, brightness=0.0, noise=0.0))
        shares.append(np.mean([not np.array_equal(x := ds[i][0], np.round(x))
                               for i in range(300)]))
    assert shares[0] == 0.0 and 0.13 < shares[1] < 0.27 and shares[2] > 0.98, shares


def test_elastic_field_interpolates_its_control_points_smoothly():
    """The field passes through its N(0, m) control shifts (every ELASTIC_SPACING px; their
    spread is m) and moves less than m between neighbouring pixels."""
    m, size = 5.0, 2 * ELASTIC_SPACING + 1
    fields = [elastic_field(size, m, np.random.default_rng(i)) for i in range(300)]
    ctrl = np.stack([f[:, ::ELASTIC_SPACING, ::ELASTIC_SPACING] for f in fields])
    again = np.random.default_rng(0).normal(0.0, m, (1, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(ctrl[0], again[0], atol=1e-4)
    assert abs(ctrl.std() / m - 1) < 0.05, ctrl.std()
    steps = max(np.abs(np.diff(f, axis=a)).max() for f in fields for a in (1, 2))
    assert steps < m / 4, steps


def test_elastic_deformation_keeps_alignment_and_moves_labels():
    """Blocks of 16 px: with the elastic shift on every patch, image and labels stay aligned;
    against the same patches without it (same seed: same origin, angle and zoom) a share of
    the labels moves (the shift's size over 16 px blocks), more for a larger magnitude;
    elastic_p sets the share of bent patches."""
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 5, (20, 20)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
    img = lab.astype(np.float32) * 10
    plain = dict(free_rotation=1.0, rot90=False, flips=False, contrast=0.0, brightness=0.0,
                 noise=0.0)  # the elastic draws come last: the rest of each patch is the same

    def patches(**kw):
        ds = PatchDataset([img], [lab], 96, 40, augment=Augment(**plain, **kw), seed=4)
        return [ds[i] for i in range(40)]

    flat = patches()
    moved = {}
    for m in (3.0, 8.0):
        bent = patches(elastic=m, elastic_p=1.0)
        for x, y in bent:
            assert np.isclose(x[0].numpy(), y.numpy() * 10.0, atol=1e-3).mean() > 0.8
        moved[m] = np.mean([(y0 != y1).float().mean()
                            for (_, y0), (_, y1) in zip(flat, bent, strict=True)])
    assert 0.05 < moved[3.0] < moved[8.0] < 0.6, moved
    half = patches(elastic=8.0, elastic_p=0.5)
    share = np.mean([not np.array_equal(y0, y1)
                     for (_, y0), (_, y1) in zip(flat, half, strict=True)])
    assert 0.25 < share < 0.75, share
