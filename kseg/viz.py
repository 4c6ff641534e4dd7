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
    # binary masks: grey background, red foreground (unknown stays black)
    "binary": [(90, 90, 90), (230, 30, 30)],
}


def palette(num_classes: int, name=None) -> np.ndarray:
    """(C + 1, 3) uint8 colours; the last row (black) is for unknown pixels.

    ``name`` is a key of :data:`PALETTES` ("regions", "surfaces"), or a sequence
    of RGB colours (e.g. read from a palette file); missing colours are drawn
    from a seeded generator, so the same classes always get the same colours.
    """
    if name is None or isinstance(name, str):
        base = PALETTES.get(name or "", [])
    else:
        base = [tuple(int(v) for v in c) for c in np.asarray(name).reshape(-1, 3)]
    if len(base) < num_classes:
        rng = np.random.default_rng(0)
        base = list(base) + [tuple(int(v) for v in rng.integers(40, 255, 3)) for _ in range(num_classes - len(base))]
    return np.array(list(base[:num_classes]) + [(0, 0, 0)], np.uint8)


def colorize(label_map, num_classes: int, name=None) -> np.ndarray:
    """Colour a label map (H, W) of class ids; ids outside [0, C) are black."""
    lab = np.asarray(label_map).astype(np.int64)
    lab = np.where((lab < 0) | (lab >= num_classes), num_classes, lab)
    return palette(num_classes, name)[lab]


def overlay(image, label_map, num_classes: int, name=None, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour map over an RGB image (uint8 out)."""
    img = np.asarray(image, np.float32)
    col = colorize(label_map, num_classes, name).astype(np.float32)
    return np.clip((1 - alpha) * img + alpha * col, 0, 255).astype(np.uint8)


def guess_palette(num_classes: int) -> str | None:
    """The name of the one built-in palette with exactly ``num_classes`` colours, else None."""
    names = [k for k, v in PALETTES.items() if len(v) == num_classes]
    return names[0] if len(names) == 1 else None


def save_label_png(path, label_map, num_classes: int, name=None) -> None:
    """Write a class map as an indexed (mode "P") PNG: pixel values are class ids, colours the palette's.

    Ids outside [0, C) are written as 255 (black). Written under a temporary name, then renamed.
    """
    from PIL import Image

    lab = np.asarray(label_map).astype(np.int64)
    if num_classes > 255:
        raise ValueError(f"an indexed PNG holds at most 255 classes, got {num_classes}")
    lab = np.where((lab < 0) | (lab >= num_classes), 255, lab).astype(np.uint8)
    pal = np.zeros((256, 3), np.uint8)
    pal[:num_classes] = palette(num_classes, name)[:num_classes]
    im = Image.frombytes("P", (lab.shape[1], lab.shape[0]), np.ascontiguousarray(lab).tobytes())
    im.putpalette(pal.ravel().tolist())
    save_image(path, im)


def save_image(path, image) -> None:
    """Save a PIL image or a uint8 (H, W, 3) array as PNG (temporary name, then renamed)."""
    from PIL import Image

    path = os.fspath(path)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, np.uint8))
    tmp = path + ".tmp"
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


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


def plot_confusion_matrix(path, cm, class_names, title=None) -> None:
    """A row-normalised confusion matrix (rows truth, columns prediction) with class names;
    each cell shows the fraction of its row, and each row label its pixel count."""
    plt = _plt()
    cm = np.asarray(cm, np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    c = len(class_names)
    side = max(4.0, 0.75 * c + 2.5)
    fig, ax = plt.subplots(figsize=(side + 2.5, side), layout="constrained")
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xticks(range(c), [str(n) for n in class_names], rotation=45, ha="right")
    ax.set_yticks(range(c), [f"{n} ({int(r):,})" for n, r in zip(class_names, rows[:, 0])])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (pixels)")
    for i in range(c):
        for j in range(c):
            if rows[i, 0] > 0:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8 if c > 6 else 10,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (rows sum to 1)")
    _save(fig, path)


def save_captioned_grid(path, images, truths, preds, class_names, captions, mask_name=None, title=None) -> None:
    """Like :func:`save_prediction_grid`, with a caption (e.g. the image's IoU) over each row."""
    plt = _plt()
    n, c = len(images), len(class_names)
    fig, axes = plt.subplots(max(n, 1), 3, figsize=(9, 3 * max(n, 1)), squeeze=False)
    for i in range(n):
        for j, im in enumerate((np.clip(images[i], 0, 255).astype(np.uint8), colorize(truths[i], c, mask_name),
                                colorize(preds[i], c, mask_name))):
            axes[i, j].imshow(im)
            axes[i, j].set_axis_off()
        axes[i, 0].set_title(captions[i], loc="left", fontsize=9)
        if i == 0:
            axes[i, 1].set_title("truth")
            axes[i, 2].set_title("prediction")
    pal = palette(c, mask_name) / 255.0
    handles = [plt.Rectangle((0, 0), 1, 1, color=pal[k]) for k in range(c)]
    fig.legend(handles + [plt.Rectangle((0, 0), 1, 1, color="black")], list(class_names) + ["unknown"],
               loc="lower center", ncol=min(c + 1, 5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97 if title else 1))
    _save(fig, path)
