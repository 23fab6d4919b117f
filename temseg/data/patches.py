"""Training patches (random, jointly augmented) and validation crops (deterministic)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Augment:
    """Joint image/label augmentation. Geometry: 90-degree rotations and flips (exact), free
    rotations and scaling (one affine resampling: bilinear image, nearest labels). Intensity
    (image only): contrast/brightness jitter, gaussian noise, on the normalised scale; and,
    nnU-Net style, a gamma curve (probability ``gamma_p``, nnU-Net's 0.3) and a Gaussian blur
    (probability 0.2).

    ``scale``: with the free rotation, zoom by a factor log-uniform in [1/scale, scale]
    (1: off), so the model sees structures somewhat larger and smaller than in the data
    (microscopes and pixel sizes differ; nnU-Net scales by 0.7-1.4).

    ``gamma``: gamma log-uniform in [1/gamma, gamma] applied to the patch rescaled to [0, 1]
    by its own range (nnU-Net: 0.7-1.5; 1: off). ``blur``: Gaussian blur of sigma uniform in
    [0.5, blur] pixels (nnU-Net: 0.5-1; 0: off): stains, focus and detectors differ between
    sessions and animals.

    ``elastic``: on a share ``elastic_p`` of the patches, an elastic deformation (the U-Net
    paper's, MONAI's ``Rand2DElastic``): displacements drawn N(0, ``elastic``) pixels on a
    control grid every ``ELASTIC_SPACING`` pixels, bicubically interpolated to a smooth
    field that moves the sampling positions of the free rotation (0: off)."""

    rot90: bool = True
    flips: bool = True
    free_rotation: float = 1.0  # probability of a rotation by a uniform angle in [0, 360)
    scale: float = 1.0
    contrast: float = 0.2
    brightness: float = 0.15
    noise: float = 0.05
    gamma: float = 1.0
    gamma_p: float = 0.3
    blur: float = 0.0
    elastic: float = 0.0
    elastic_p: float = 0.5


#: Control-point spacing of the elastic deformation in pixels (at the training pixel size:
#: about the diameter of a small axon, so a fibre bends as a whole and its ring stays closed).
ELASTIC_SPACING = 64


def elastic_field(size: int, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement field (2, size, size) in pixels (dy, dx): N(0,
    ``magnitude``) at control points every :data:`ELASTIC_SPACING` pixels, bicubic between."""
    n = math.ceil((size - 1) / ELASTIC_SPACING) + 1
    ctrl = torch.from_numpy(rng.normal(0.0, magnitude, (1, 2, n, n)).astype(np.float32))
    span = (n - 1) * ELASTIC_SPACING + 1  # the grid covers the patch; crop its first pixels
    field = torch.nn.functional.interpolate(ctrl, size=(span, span), mode="bicubic",
                                            align_corners=True)
    return field[0, :, :size, :size].numpy()


def pad_to(arr: np.ndarray, height: int, width: int, mode: str = "reflect") -> np.ndarray:
    """Pad (H, W) evenly on both sides up to at least (height, width) with numpy ``mode``
    (numpy reflects repeatedly when the pad is wider than the image)."""
    dy, dx = max(0, height - arr.shape[0]), max(0, width - arr.shape[1])
    if not (dy or dx):
        return arr
    if mode == "reflect" and min(arr.shape) < 2:
        mode = "edge"
    return np.pad(arr, ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2)), mode=mode)


def _rotate(image: np.ndarray, labels: np.ndarray, angle: float, size: int,
            zoom: float = 1.0, shift: np.ndarray | None = None) -> tuple:
    """Rotate a square crop (S, S) by ``angle`` radians about its centre, magnify it by
    ``zoom`` and take the central (size, size): image bilinear, labels nearest. ``shift``
    (2, size, size): displacements (dy, dx) in the crop's pixels added to the sampling
    positions (an elastic deformation)."""
    s = image.shape[0]
    c = (s - 1) / 2.0
    r = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    xs, ys = cos * xx - sin * yy + c, sin * xx + cos * yy + c
    if shift is not None:
        ys, xs = ys + shift[0], xs + shift[1]
    grid = torch.from_numpy(np.stack([(xs + 0.5) / s * 2 - 1, (ys + 0.5) / s * 2 - 1], -1))[None]
    img = torch.nn.functional.grid_sample(torch.from_numpy(image)[None, None], grid,
                                          mode="bilinear", align_corners=False)
    lab = torch.nn.functional.grid_sample(torch.from_numpy(labels.astype(np.float32))[None, None],
                                          grid, mode="nearest", align_corners=False)
    return img[0, 0].numpy(), lab[0, 0].numpy().astype(np.uint8)


def _gamma_and_blur(img: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """The optional gamma curve and blur of :class:`Augment` on an image patch (P, P)."""
    if aug.gamma > 1 and rng.random() < aug.gamma_p:
        lo, hi = float(img.min()), float(img.max())
        g = math.exp(rng.uniform(-1, 1) * math.log(aug.gamma))
        if hi - lo > 1e-6:
            img = (lo + (hi - lo) * ((img - lo) / (hi - lo)) ** g).astype(np.float32)
    if aug.blur > 0 and rng.random() < 0.2:
        img = gaussian_filter(np.asarray(img, np.float32), rng.uniform(0.5, max(0.5, aug.blur)))
    return img


class PatchDataset(Dataset):
    """Random ``patch_size`` patches, ``patches_per_image`` per image per epoch.

    Every pixel of every image can be drawn (patch origins are uniform over the valid range);
    images smaller than a patch are reflect-padded. Items are a pure function of
    (seed, epoch, index), so runs are reproducible whatever the DataLoader's worker count.

    Items: image (1, P, P) float32, labels (P, P) int64.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: int = 256,
        patches_per_image: int = 80,
        augment: Augment | None = Augment(),
        seed: int = 0,
    ) -> None:
        if len(images) != len(labels) or not images:
            raise ValueError("need the same, non-zero number of images and label maps")
        self.patch_size, self.ppi, self.seed = patch_size, patches_per_image, seed
        self.augment = augment
        self.epoch = 0
        # margin so that a free rotation of the patch still reads real (reflected) pixels
        rotates = bool(augment and augment.free_rotation)
        if augment and augment.scale < 1.0:
            raise ValueError(f"Augment.scale must be >= 1, got {augment.scale}")
        widest = math.sqrt(2) * (augment.scale if augment else 1.0)  # rotated, zoomed out
        bend = 8 * augment.elastic if augment else 0.0  # 4 sigma of the elastic shift a side
        self.crop = int(math.ceil(patch_size * widest + bend)) + 2 if rotates else patch_size
        self.margin = (self.crop - patch_size + 1) // 2
        self.images, self.labels, self.valid = [], [], []
        for img, lab in zip(images, labels, strict=True):
            if img.shape != lab.shape:
                raise ValueError(f"image {img.shape} and labels {lab.shape} differ in size")
            img = pad_to(np.asarray(img, np.float32), patch_size, patch_size)
            lab = pad_to(lab, patch_size, patch_size)
            self.valid.append(img.shape)
            m = self.margin
            self.images.append(pad_to(img, img.shape[0] + 2 * m, img.shape[1] + 2 * m))
            self.labels.append(pad_to(lab, lab.shape[0] + 2 * m, lab.shape[1] + 2 * m))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.ppi

    def origin(self, index: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """(image index, y0, x0) of the patch in unpadded coordinates."""
        i = index // self.ppi
        h, w = self.valid[i]
        p = self.patch_size
        return i, int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        i, y0, x0 = self.origin(index, rng)
        p, m, aug = self.patch_size, self.margin, self.augment
        if aug and aug.free_rotation and rng.random() < aug.free_rotation:
            y1, x1 = y0 + m - (self.crop - p) // 2, x0 + m - (self.crop - p) // 2
            img = self.images[i][y1:y1 + self.crop, x1:x1 + self.crop]
            lab = self.labels[i][y1:y1 + self.crop, x1:x1 + self.crop]
            angle = rng.uniform(0, 2 * math.pi)
            zoom = math.exp(rng.uniform(-1, 1) * math.log(aug.scale)) if aug.scale > 1 else 1.0
            shift = None
            if aug.elastic > 0 and rng.random() < aug.elastic_p:
                shift = elastic_field(p, aug.elastic, rng)
            img, lab = _rotate(np.ascontiguousarray(img), np.ascontiguousarray(lab), angle, p,
                               zoom, shift)
        else:
            img = self.images[i][y0 + m:y0 + m + p, x0 + m:x0 + m + p]
            lab = self.labels[i][y0 + m:y0 + m + p, x0 + m:x0 + m + p]
        if aug:
            if aug.rot90:
                k = int(rng.integers(0, 4))
                img, lab = np.rot90(img, k), np.rot90(lab, k)
            if aug.flips and rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            img = img * np.float32(1 + rng.uniform(-aug.contrast, aug.contrast)) + np.float32(
                rng.uniform(-aug.brightness, aug.brightness))
            img = _gamma_and_blur(img, aug, rng)
            if aug.noise:
                img = img + rng.normal(0, aug.noise, img.shape).astype(np.float32)
        img = np.ascontiguousarray(img, dtype=np.float32)
        lab = np.ascontiguousarray(lab).astype(np.int64)
        return torch.from_numpy(img)[None], torch.from_numpy(lab)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Central (size, size) crop of (H, W), reflect-padded first when the image is smaller."""
    arr = pad_to(arr, size, size)
    y0, x0 = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[y0:y0 + size, x0:x0 + size]


class CenterCropDataset(Dataset):
    """Deterministic validation crops: one central (size, size) crop per image.

    Items: image (1, S, S) float32, labels (S, S) int64.
    """

    def __init__(
        self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], size: int
    ) -> None:
        self.items = []
        for im, lab in zip(images, labels, strict=True):
            crop = np.ascontiguousarray(center_crop(np.asarray(im, np.float32), size))
            self.items.append((torch.from_numpy(crop)[None],
                               torch.from_numpy(center_crop(lab, size).astype(np.int64))))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]
