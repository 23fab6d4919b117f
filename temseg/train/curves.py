"""Training curves as a PNG."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path


def plot_curves(history: list[dict], path: str | Path, class_names: tuple[str, ...]) -> None:
    """Loss (train/val) and validation Dice per class against epochs, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        ax1.plot(epochs, [h.get("val_loss") for h in history], "o-", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("CE + 0.5 Dice loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for name in class_names:
        ys = [h.get("val_dice", {}).get(name) for h in history]
        if any(y is not None for y in ys):
            ax2.plot(epochs, [float("nan") if y is None else y for y in ys], ".-", label=name)
    ax2.plot(epochs, [h.get("val_mean_dice") for h in history], "k-", lw=2, label="mean")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation Dice")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
