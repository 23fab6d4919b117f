"""Real example data shipped with temseg (each folder has its licence and attribution)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def example_data(name: str = "tem-mouse-cc") -> Path:
    """The folder of example ``name`` (``images/`` + ``masks/``, a data folder for
    ``temseg evaluate``). FileNotFoundError when it is not installed."""
    folder = HERE / name
    if not (folder / "images").is_dir():
        raise FileNotFoundError(f"example data {name!r} is not installed ({folder})")
    return folder


def example_image(name: str = "tem-mouse-cc") -> tuple[Path, Path]:
    """(image, mask) of example ``name``'s first image."""
    folder = example_data(name)
    image = sorted((folder / "images").glob("*.tif"))[0]
    return image, folder / "masks" / image.name
