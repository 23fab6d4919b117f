"""Training configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..models import UNetConfig


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in ``config.json`` of the run folder)."""

    data: str = ""
    out: str = "runs/temseg"
    model: UNetConfig = field(default_factory=UNetConfig)
    epochs: int = 50
    time_limit: float | None = None  # minutes of wall clock; stops cleanly, keeps the best
    batch_size: int = 8
    patch_size: int = 256
    patches_per_image: int = 80
    scale_augment: float = 1.25  # zoom patches by log-uniform [1/s, s] (Augment.scale; 1: off)
    val_crop: int = 512
    val_fraction: float = 0.2
    val_groups: tuple[str, ...] = ()
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the run spent warming up the learning rate
    lambda_dice: float = 0.5
    seed: int = 0
    amp: str = "auto"
    compile: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    progress: bool = True

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
