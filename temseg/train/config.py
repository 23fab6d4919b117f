"""Training configuration, validated when it is made (the library's boundary; the CLI builds
one before any work)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..models import UNetConfig

# The architecture of the recipe that won the leave-mice-out cross-validation under a 20-minute
# CPU budget (docs/accuracy.md); the ResUNet's own defaults (UNetConfig()) stay the seed's.
DEFAULT_MODEL = UNetConfig(width=16, heads=4)
# Train at 0.01 um per pixel (finer data is shrunk to it, coarser data kept): a 256 px patch
# then holds whole large axons with their myelin (docs/accuracy.md: +0.10 mean Dice on unseen
# mice in the screen). Axon sizes in nerve tissue are physical, so the default is one too.
DEFAULT_PIXEL_SIZE = 0.01


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in ``config.json`` of the run folder).

    ``init``: start from the weights of a checkpoint, run folder or shipped model (same
    architecture; a new head when its classes differ); ignored when resuming.

    ``resume``: continue the run in ``out`` from its ``last.pt``. Without it a folder that
    already holds a ``last.pt`` is refused (ValueError); with it and no ``last.pt`` the run
    starts afresh (logged), so a job script may always pass it.

    Raises ValueError naming the field (and its CLI flag) when a value is out of range.
    """

    data: str = ""
    out: str = "runs/temseg"
    model: UNetConfig = field(default_factory=lambda: DEFAULT_MODEL)
    epochs: int = 50
    time_limit: float | None = None  # minutes of wall clock; stops cleanly, keeps the best
    # 2: better than 4 on every fold of a paired screen on an AVX2 CPU (stop 20), as 4 was
    # than 8 (stop 18); 1 lost to 2 (docs/accuracy.md, "Batch 2 and batch 1")
    batch_size: int = 2
    patch_size: int = 256
    patches_per_image: int = 80
    # share of the patches resampled by a free rotation (uniform angle) and the zoom below;
    # the others get the exact 90-degree rotations and flips only (Augment.free_rotation)
    rotate_probability: float = 1.0
    scale_augment: float = 1.25  # zoom patches by log-uniform [1/s, s] (Augment.scale; 1: off)
    # gamma log-uniform in [1/g, g] on half the patches (Augment.gamma, gamma_p; 1: off):
    # exposure differs between micrographs (docs/accuracy.md, "Exposure")
    gamma_augment: float = 2.5
    gamma_probability: float = 0.5  # of a patch getting the gamma curve
    blur_augment: float = 0.0  # Gaussian blur, sigma in [0.5, b] px, p 0.2 (Augment.blur; 0: off)
    # elastic deformation with the free rotation: control-point shifts N(0, e) px every 64 px
    # on a share of the patches (Augment.elastic, elastic_p; 0: off)
    elastic_augment: float = 0.0
    elastic_probability: float = 0.5
    # train at this pixel size (um): finer images and masks shrunk on loading (None: as they
    # are; temseg.data.rescale)
    pixel_size: float | None = DEFAULT_PIXEL_SIZE
    val_crop: int = 512
    # 0: every animal trains and validation reuses the training images; with a handful of
    # animals a held-out one cost more than it bought (docs/accuracy.md); select with temseg cv
    val_fraction: float = 0.0
    val_groups: tuple[str, ...] = ()
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the run spent warming up the learning rate
    lambda_dice: float = 0.5
    # cross-entropy of the thin background lines between touching objects counts 1 + this
    # (temseg.losses.thin_background; 0: off; docs/accuracy.md, "The lines")
    border_weight: float = 5.0
    # validate and save an exponential moving average of the weights (temseg.train.ema;
    # 0: off, the raw weights). 0.999 with its warm-up averages about the last tenth of a
    # run's steps: +0.005 / +0.005 / +0.019 on the three folds, paired (docs/accuracy.md,
    # stop 23)
    ema_decay: float = 0.999
    seed: int = 0
    amp: str = "auto"
    compile: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    progress: bool = True
    resume: bool = False
    init: str | None = None  # start from these weights (checkpoint, run folder, shipped name)

    def __post_init__(self) -> None:
        self.val_groups = tuple(self.val_groups)
        problems = config_problems(self)
        if problems:
            raise ValueError(f"invalid training configuration: {'; '.join(problems)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["val_groups"] = list(self.val_groups)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = UNetConfig.from_dict(d.get("model", {}))
        d["val_groups"] = tuple(d.get("val_groups", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _name(field_name: str) -> str:
    flag = "--" + field_name.split(".")[-1].replace("_", "-")
    return f"{field_name} ({flag})"


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check(name: str, value: object, ok: bool, rule: str) -> str | None:
    if _number(value) and ok:
        return None
    return f"{_name(name)} must be {rule}, got {value!r}"


def _integer(name: str, value: object, low: int) -> str | None:
    return _check(name, value, isinstance(value, int) and value >= low,
                  "a positive integer" if low == 1 else f"an integer >= {low}")


def model_problems(m: UNetConfig) -> list[str]:
    """What is wrong with an architecture (empty when nothing)."""
    problems = [p for p in (_integer("model.width", m.width, 1),
                            _integer("model.depth", m.depth, 1),
                            _integer("model.heads", m.heads, 1),
                            _integer("model.deep_supr_num", m.deep_supr_num, 0)) if p]
    if not problems and m.deep_supr_num >= m.depth:
        problems.append(f"{_name('model.deep_supr_num')} = {m.deep_supr_num} must be less "
                        f"than the depth {m.depth} (one auxiliary head per coarser decoder "
                        "level)")
    if not problems and m.attention and (m.width * 2**m.depth) % m.heads:
        problems.append(f"{_name('model.heads')} = {m.heads} must divide the bottleneck width "
                        f"{m.width * 2**m.depth} (width {m.width} * 2**depth {m.depth})")
    return problems


def config_problems(c: TrainConfig) -> list[str]:
    """Every out-of-range value of ``c`` (empty when none), each naming the field."""
    problems = model_problems(c.model)
    multiple = 2 ** c.model.depth if not problems else 1
    checks = [
        _integer("epochs", c.epochs, 1),
        None if c.time_limit is None else _check("time_limit", c.time_limit,
                                                 _number(c.time_limit) and c.time_limit > 0,
                                                 "a positive number of minutes (or None)"),
        _integer("batch_size", c.batch_size, 1),
        _check("patch_size", c.patch_size, isinstance(c.patch_size, int) and c.patch_size > 0
               and c.patch_size % multiple == 0,
               f"a positive multiple of {multiple} (2**depth, the model's size multiple)"),
        _integer("patches_per_image", c.patches_per_image, 1),
        _check("rotate_probability", c.rotate_probability, _number(c.rotate_probability)
               and 0 <= c.rotate_probability <= 1, "in [0, 1]"),
        _check("scale_augment", c.scale_augment, _number(c.scale_augment)
               and c.scale_augment >= 1, ">= 1 (1: no zoom)"),
        _check("gamma_augment", c.gamma_augment, _number(c.gamma_augment)
               and c.gamma_augment >= 1, ">= 1 (1: no gamma)"),
        _check("gamma_probability", c.gamma_probability, _number(c.gamma_probability)
               and 0 <= c.gamma_probability <= 1, "in [0, 1]"),
        _check("blur_augment", c.blur_augment, _number(c.blur_augment)
               and c.blur_augment >= 0, ">= 0 (0: no blur)"),
        _check("elastic_augment", c.elastic_augment, _number(c.elastic_augment)
               and 0 <= c.elastic_augment <= 32, "in [0, 32] pixels (0: no elastic deformation)"),
        _check("elastic_probability", c.elastic_probability, _number(c.elastic_probability)
               and 0 <= c.elastic_probability <= 1, "in [0, 1]"),
        None if c.pixel_size is None else _check(
            "pixel_size", c.pixel_size, _number(c.pixel_size) and c.pixel_size > 0,
            "a positive number of micrometres (or None)"),
        _integer("val_crop", c.val_crop, 1),
        _check("val_fraction", c.val_fraction, _number(c.val_fraction)
               and 0 <= c.val_fraction < 1, "in [0, 1)"),
        _check("lr", c.lr, _number(c.lr) and c.lr > 0, "a positive number"),
        _check("weight_decay", c.weight_decay, _number(c.weight_decay) and c.weight_decay >= 0,
               ">= 0"),
        _check("warmup", c.warmup, _number(c.warmup) and 0 <= c.warmup < 1, "in [0, 1)"),
        _check("border_weight", c.border_weight, _number(c.border_weight)
               and c.border_weight >= 0, "a number >= 0"),
        _check("ema_decay", c.ema_decay, _number(c.ema_decay) and 0 <= c.ema_decay < 1,
               "in [0, 1) (0: off)"),
        _check("lambda_dice", c.lambda_dice, _number(c.lambda_dice) and c.lambda_dice >= 0,
               ">= 0"),
        _integer("num_workers", c.num_workers, 0),
        None if c.threads is None else _integer("threads", c.threads, 1),
    ]
    return problems + [p for p in checks if p]
