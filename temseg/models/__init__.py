"""Models: the residual U-Net and its configuration."""

from .unet import ResUNet, UNetConfig

__all__ = ["ResUNet", "UNetConfig", "build_model"]


def build_model(config: UNetConfig | dict | None = None) -> ResUNet:
    """A :class:`ResUNet` from a config or its dict form (as stored in checkpoints)."""
    if isinstance(config, dict):
        config = UNetConfig.from_dict(config)
    return ResUNet(config or UNetConfig())
