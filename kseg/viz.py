"""Pictures: palettes, colour overlays, prediction grids and learning curves (PNG via matplotlib)."""

from __future__ import annotations

import csv
import os

import numpy as np

# Colours per class index; unknown (-1 / 255) is black.
PALETTES = {
    "regions": [(70, 130, 180), (34, 139, 34), (128, 64, 128), (124, 252, 0), (0, 105, 148),
                (178, 34, 34), (139, 115, 85), (255, 215, 0)],
    "surfaces": [(70, 130, 180), (128, 64, 128), (220, 120, 60)],
}


def palette(num_classes: int, name: str | None = None) -> np.ndarray:
    """(C + 1, 3) uint8 colours; the last row (black) is for unknown pixels."""
    base = PALETTES.get(name or "", [])
    if len(base) < num_classes:
        rng = np.random.default_rng(0)
        base = list(base) + [tuple(int(v) for v in rng.integers(40, 255, 3)) for _ in range(num_classes - len(base))]
    return np.array(list(base[:num_classes]) + [(0, 0, 0)], np.uint8)


def colorize(label_map, num_classes: int, name: str | None = None) -> np.ndarray:
    """Colour a label map (H, W) of class ids; ids outside [0, C) are black."""
    lab = np.asarray(label_map).astype(np.int64)
    lab = np.where((lab < 0) | (lab >= num_classes), num_classes, lab)
    return palette(num_classes, name)[lab]


def overlay(image, label_map, num_classes: int, name: str | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour map over an RGB image (uint8 out)."""
    img = np.asarray(image, np.float32)
    col = colorize(label_map, num_classes, name).astype(np.float32)
    return np.clip((1 - alpha) * img + alpha * col, 0, 255).astype(np.uint8)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_prediction_grid(path, images, truths, preds, class_names, mask_name=None, title=None) -> None:
    """A PNG with one row per image: input, ground truth, prediction (the tutorial's picture)."""
    plt = _plt()
    n, c = len(images), len(class_names)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for i in range(n):
        for j, (im, ttl) in enumerate(((np.clip(images[i], 0, 255).astype(np.uint8), "image"),
                                        (colorize(truths[i], c, mask_name), "truth"),
                                        (colorize(preds[i], c, mask_name), "prediction"))):
            axes[i, j].imshow(im)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(ttl)
    pal = palette(c, mask_name) / 255.0
    handles = [plt.Rectangle((0, 0), 1, 1, color=pal[k]) for k in range(c)]
    fig.legend(handles, class_names, loc="lower center", ncol=min(c, 4), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, path)


def plot_history(csv_path, png_path) -> None:
    """Learning curves from a Keras CSVLogger file: loss and each metric, train vs validation."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    keys = [k for k in rows[0] if k != "epoch" and not k.startswith("val_") and k != "learning_rate"]
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, k in zip(axes[0], keys):
        ax.plot(epochs, [float(r[k]) for r in rows], "o-", label="train")
        if f"val_{k}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{k}"]) for r in rows], "o-", label="validation")
        ax.set_title(k)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, png_path)


def _save(fig, path) -> None:
    plt = _plt()
    path = os.fspath(path)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
