"""Write notebooks/tutorial.ipynb and notebooks/own_data.ipynb (without outputs).

The notebooks are generated from the cells below so that they stay small and
reviewable; run ``python notebooks/build_notebooks.py`` after editing this file.
``KSEG_NOTEBOOK_BUDGET=tiny`` makes both run in about a minute on a CPU
(a few images, 1 epoch, 64x64): that is how CI executes them with nbmake.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
# Set-up. In Colab: install kseg from your wheel or repository, optionally keep runs in Google Drive.
# In a local checkout: use the repository as it is.
KSEG_SOURCE = ""  # @param {type:"string"}
KEEP_ON_DRIVE = False  # @param {type:"boolean"}
# KSEG_SOURCE: a wheel (dist/kseg-*.whl from `python -m build` in your clone, uploaded to /content or to
# Drive's MyDrive/kseg/), or the URL you cloned from as "git+https://..."; empty: the newest kseg-*.whl
# in /content or MyDrive/kseg, else a file dialog asks for one. KEEP_ON_DRIVE: runs go to MyDrive/kseg/runs.
import os, subprocess, sys
from pathlib import Path

COLAB = "google.colab" in sys.modules
RUNS = Path("runs")
if COLAB:
    DRIVE = Path("/content/drive/MyDrive/kseg")
    if KEEP_ON_DRIVE:
        from google.colab import drive
        drive.mount("/content/drive")
        RUNS = DRIVE / "runs"
    wheels = sorted((w for d in (Path("/content"), DRIVE) if d.is_dir() for w in d.glob("kseg-*.whl")),
                    key=lambda w: w.stat().st_mtime)
    source = KSEG_SOURCE or os.environ.get("KSEG_PIP", "") or (str(wheels[-1]) if wheels else "")
    if not source:
        from google.colab import files
        print("Upload kseg's wheel (dist/kseg-*.whl: run `python -m build` in your clone of kseg):")
        source = next((str(Path(n).resolve()) for n in files.upload() if n.endswith(".whl")), "")
    if not source:
        raise SystemExit("kseg: no wheel uploaded and no KSEG_SOURCE: give one of them, then run this cell again")
    print("installing kseg from", source)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    REPO = None
else:
    REPO = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "kseg" / "__init__.py").is_file()), None)
    if REPO is not None and str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

import kseg
import tensorflow as tf

GPUS = tf.config.list_physical_devices("GPU")
print("kseg", kseg.__version__, "on", ", ".join(g.name for g in GPUS) if GPUS else "the CPU")
if COLAB and not GPUS:
    print("No GPU: Runtime > Change runtime type > a GPU makes the full budget several times faster.")'''


BUDGET = '''\
# How much to do: "tiny" (CI: a few images, 1 epoch, 64x64) or "full" (the tutorial's settings).
import tempfile

BUDGET = os.environ.get("KSEG_NOTEBOOK_BUDGET", "full")
if BUDGET == "tiny":
    LIMIT, EPOCHS, SIZE, BATCH, BACKBONE = 12, 1, 64, 4, "resnet18"
    WORK = Path(tempfile.mkdtemp(prefix="kseg-nb-"))
else:
    LIMIT, EPOCHS, SIZE, BATCH, BACKBONE = None, 20, 224, 16, "resnet34"
    WORK = RUNS / NAME
WORK.mkdir(parents=True, exist_ok=True)
# where the iccv09 archive is found or downloaded and extracted (the repository's data/ in a checkout)
DATA_DIR = Path(os.environ.get("KSEG_DATA_DIR", (REPO / "data") if REPO else "data"))
print(f"budget {BUDGET}: {LIMIT or 'all'} images, {EPOCHS} epoch(s), {SIZE}x{SIZE}, {BACKBONE}; outputs in {WORK}")'''


def tutorial():
    md, code = new_markdown_cell, new_code_cell
    return [
        md("# kseg tutorial: U-Net on the Stanford Background dataset\n\n"
           "The classic Colab tutorial (segmentation_models' U-Net with a resnet34 encoder on iccv09's "
           "*surfaces* labels: sky, horizontal, vertical) redone with kseg, step by step: look at the data, "
           "build the model, train it, plot the learning curves, look at predictions, evaluate on the validation "
           "set, and export a SavedModel and a TFLite file.\n\n"
           "Differences from the original, which are bugs there: label maps are resized by nearest neighbour "
           "(never interpolated), unknown pixels (-1) are ignored by the loss and the metrics, and the scores come "
           "from one confusion matrix over the whole validation set.\n\n"
           "Set `KSEG_NOTEBOOK_BUDGET=tiny` to run everything in about a minute on a CPU."),
        code(SETUP),
        code('NAME = "tutorial"\n' + BUDGET),
        md("## 1. The data\n\n`find_iccv09` looks for `data/iccv09Data`, then for the archive in "
           "`../shared/data`, else downloads it (14 MB). Labels are parsed once and cached."),
        code('''\
import numpy as np
import matplotlib.pyplot as plt
from kseg.data import find_iccv09, load_iccv09
from kseg import viz

root = find_iccv09(download_dir=DATA_DIR)
ds = load_iccv09(root, mask="surfaces", limit=LIMIT)
print(f"{len(ds)} images, classes {ds.class_names}")
counts = np.bincount(np.concatenate([l.ravel() for l in ds.labels]) + 1, minlength=len(ds.class_names) + 1)
for name, n in zip(("unknown",) + ds.class_names, counts):
    print(f"  {name:<11} {n / counts.sum():6.1%} of pixels")'''),
        code('''\
from kseg.predict import read_image

fig, axes = plt.subplots(2, 3, figsize=(12, 6))
for i, ax in enumerate(axes.T):
    img = read_image(ds.image_paths[i])
    ax[0].imshow(img); ax[0].set_title(f"{ds.ids[i]}  {img.shape[1]}x{img.shape[0]}")
    ax[1].imshow(viz.colorize(ds.labels[i], 3, "surfaces")); ax[1].set_title("surfaces (black = unknown)")
    for a in ax: a.set_axis_off()
plt.show()'''),
        md("## 2. Build the model\n\nA U-Net with a resnet34 encoder (resnet18 in the tiny budget), "
           "3 output classes, softmax at the end. The model carries its own input normalisation, so it takes "
           "raw RGB in [0, 255]."),
        code('''\
import keras
from kseg import models

keras.utils.set_random_seed(42)
model = models.build("unet", backbone=BACKBONE, num_classes=3, input_shape=(SIZE, SIZE, 3))
print(f"{model.name}: {model.count_params():,} parameters, input {model.input_shape}, output {model.output_shape}")'''),
        md("## 3. Train\n\nAn 80/20 split, one-hot targets (an unknown pixel is an all-zero row), "
           "Adam at 1e-3, cross-entropy that ignores unknown pixels, pixel accuracy and mean IoU."),
        code('''\
from kseg import losses, metrics
from kseg.data import iccv09_datasets

train_ds, val_ds, info = iccv09_datasets(root, mask="surfaces", size=(SIZE, SIZE), batch_size=BATCH,
                                         val_split=0.2, seed=42, limit=LIMIT)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.get("ce"),
              metrics=[metrics.PixelAccuracy(3), metrics.MeanIoU(3)])
history = model.fit(train_ds, steps_per_epoch=info["steps_per_epoch"], epochs=EPOCHS,
                    validation_data=val_ds, verbose=2)'''),
        md("## 4. Learning curves"),
        code('''\
h = history.history
keys = [k for k in h if not k.startswith("val_")]
fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5))
for ax, k in zip(np.atleast_1d(axes), keys):
    ax.plot(range(1, len(h[k]) + 1), h[k], "o-", label="train")
    if f"val_{k}" in h:
        ax.plot(range(1, len(h[k]) + 1), h[f"val_{k}"], "o-", label="validation")
    ax.set_title(k); ax.set_xlabel("epoch"); ax.legend()
plt.show()'''),
        md("## 5. Predictions\n\n`kseg.predict.Predictor` resizes an image to the model's size, runs it, "
           "and resizes the probabilities back to the image's own size. `scales=` and `flip=` add "
           "test-time augmentation."),
        code('''\
from kseg.predict import Predictor

predict = Predictor(model)
val_idx = info["val_idx"][:3]
fig, axes = plt.subplots(len(val_idx), 3, figsize=(12, 3.2 * len(val_idx)), squeeze=False)
for row, i in zip(axes, val_idx):
    img = read_image(ds.image_paths[i])
    pred = predict(img).argmax(-1)
    for ax, pic, title in zip(row, (img, viz.colorize(ds.labels[i], 3, "surfaces"),
                                    viz.overlay(img, pred, 3, "surfaces")),
                              ("image", "truth", "prediction")):
        ax.imshow(pic); ax.set_title(title); ax.set_axis_off()
plt.show()'''),
        md("## 6. Evaluate\n\nOne confusion matrix over every validation pixel (unknown pixels left out), "
           "at each image's own resolution; then pixel accuracy, per-class IoU and mean IoU."),
        code('''\
from kseg.metrics import confusion_matrix, scores

cm = np.zeros((3, 3), np.int64)
for i in info["val_idx"]:
    pred = predict(read_image(ds.image_paths[i])).argmax(-1)
    cm += confusion_matrix(ds.labels[i], pred, 3)
report = scores(cm, ds.class_names)
print(f"pixel accuracy {report['pixel_accuracy']:.3f}, mIoU {report['miou']:.3f}")
print(cm)'''),
        md("## 7. Export\n\nA SavedModel whose `serving_default` takes uint8 images of any size and returns "
           "probabilities and the class map at that size, with `model.tflite` (the same signature) inside. "
           "From the command line: `python -m kseg.export --model best.keras --out DIR`."),
        code('''\
import tensorflow as tf
from kseg.export import TFLITE_NAME, export_saved_model

out = export_saved_model(model, WORK / "saved_model")
serve = tf.saved_model.load(str(out)).signatures["serving_default"]
img = read_image(ds.image_paths[0])
res = serve(images=tf.constant(img[None]))
print({k: tuple(v.shape) for k, v in res.items()}, "for an image of", img.shape)
assert res["class_map"].shape[1:] == img.shape[:2]

interpreter = tf.lite.Interpreter(model_path=str(out / TFLITE_NAME))
lite = interpreter.get_signature_runner("serving_default")(images=img[None])
agree = (lite["class_map"] == res["class_map"].numpy()).mean()
print(f"TFLite ({(out / TFLITE_NAME).stat().st_size / 1e6:.1f} MB) agrees with the SavedModel on {agree:.2%} of pixels")'''),
    ]


def own_data():
    md, code = new_markdown_cell, new_code_cell
    return [
        md("# Train kseg on your own data\n\n"
           "Put your data in one folder:\n\n"
           "```\nmy_data/\n  images/   a.jpg  b.jpg ...\n  masks/    a.png  b.png ...   (same names; PNG, never JPEG)\n"
           "  palette.json                  (for RGB masks: class name -> colour)\n```\n\n"
           "Masks are either indexed/greyscale (8- or 16-bit) PNGs whose pixel values are class ids "
           "(255 = unknown), or RGB PNGs with a palette file mapping colours to classes "
           "(`{\"sky\": [70, 130, 180], ...}`; an entry named `void` or `ignore` marks unknown pixels). "
           "Instead of a palette, `classes.txt` can name the classes of indexed masks, one a line. "
           "Two-valued masks (0/255, 0/1) are binary segmentation. kseg says in one line what it infers "
           "(`kseg: ...`) and warns about suspicious masks (`kseg: warning: ...`); see `docs/masks.md`.\n\n"
           "This notebook first *makes* such a folder from a few iccv09 images (RGB masks + palette.json), "
           "then loads it with `kseg.data.folder`, trains, and predicts with `python -m kseg.predict`. "
           "Point `DATA` at your own folder to use yours."),
        code(SETUP),
        code('NAME = "own_data"\n' + BUDGET),
        md("## 1. An example folder (skip this with your own data)"),
        code('''\
import json
import numpy as np
from PIL import Image
from kseg import viz
from kseg.data import find_iccv09, load_iccv09

DATA = Path(os.environ.get("KSEG_OWN_DATA", WORK / "my_data"))
if "KSEG_OWN_DATA" not in os.environ:
    src = load_iccv09(find_iccv09(download_dir=DATA_DIR), mask="surfaces", limit=LIMIT or 120)
    (DATA / "images").mkdir(parents=True, exist_ok=True)
    (DATA / "masks").mkdir(exist_ok=True)
    colours = viz.palette(3, "surfaces")  # last row (black) = unknown
    for ident, img, lab in zip(src.ids, src.image_paths, src.labels):
        Path(DATA / "images" / f"{ident}.jpg").write_bytes(Path(img).read_bytes())
        Image.fromarray(colours[np.where(lab < 0, 3, lab)]).save(DATA / "masks" / f"{ident}.png")
    palette = {name: colours[i].tolist() for i, name in enumerate(src.class_names)} | {"void": [0, 0, 0]}
    (DATA / "palette.json").write_text(json.dumps(palette, indent=1))
print(sorted(p.name for p in DATA.iterdir()), len(list((DATA / "images").iterdir())), "images")
print((DATA / "palette.json").read_text() if (DATA / "palette.json").exists() else "(no palette.json)")'''),
        md("## 2. Load it\n\n`kseg.data.folder` matches images and masks by name and checks sizes and colours; "
           "any problem is one clear error naming the file."),
        code('''\
import matplotlib.pyplot as plt
from kseg.data import folder

ds = folder(DATA)
print(f"{len(ds)} pairs, classes {ds.class_names}")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
axes[0].imshow(Image.open(ds.image_paths[0])); axes[1].imshow(viz.colorize(ds.labels[0], ds.num_classes, ds.colors))
for a in axes: a.set_axis_off()
plt.show()'''),
        md("## 3. Train\n\nThe same pipeline and augmentation as iccv09. From the command line this is\n\n"
           "```\npython -m kseg.train --data-format folder --data my_data --augment flip --out runs/mine\n```"),
        code('''\
import keras
from kseg import losses, metrics, models
from kseg.data import folder_datasets

keras.utils.set_random_seed(42)
train_ds, val_ds, info = folder_datasets(DATA, size=(SIZE, SIZE), batch_size=BATCH, val_split=0.2,
                                         augment="flip", limit=LIMIT)
c = info["dataset"].num_classes
model = models.build("unet", backbone=BACKBONE, num_classes=c, input_shape=(SIZE, SIZE, 3))
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.get("ce"),
              metrics=[metrics.PixelAccuracy(c), metrics.MeanIoU(c)])
model.fit(train_ds, steps_per_epoch=info["steps_per_epoch"], epochs=EPOCHS, validation_data=val_ds, verbose=2)
model.save(WORK / "model.keras")'''),
        md("## 4. Predict on new images\n\nClass maps as indexed PNGs (with your palette) and colour overlays, "
           "at each image's own size; `--scales 0.75,1,1.25 --flip` adds test-time augmentation."),
        code('''\
val_images = [ds.image_paths[i] for i in info["val_idx"]]
env = dict(os.environ, PYTHONPATH=str(REPO) if REPO else os.environ.get("PYTHONPATH", ""))
cmd = [sys.executable, "-m", "kseg.predict", "--model", str(WORK / "model.keras"), *val_images,
       "--out", str(WORK / "predictions"), "--palette", str(DATA / "palette.json"), "--flip", "--quiet"]
print(" ".join(cmd[1:3]), "...")
print(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
first = Path(val_images[0]).stem
overlay = Image.open(WORK / "predictions" / f"{first}_overlay.png")
assert overlay.size == Image.open(val_images[0]).size
plt.imshow(overlay); plt.axis("off"); plt.show()'''),
    ]


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    })
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i:02d}"  # stable ids: regenerating gives the same file
    nbformat.validate(nb)
    path = HERE / f"{name}.ipynb"
    path.write_text(nbformat.writes(nb) + "\n")
    return path


NOTEBOOKS = ("tutorial", "own_data")
BADGES = ("<!-- colab badges: python notebooks/build_notebooks.py --repo OWNER/NAME writes them -->",
          "<!-- /colab badges -->")


def colab_badges(readme: str, repo: str, branch: str = "main") -> str:
    """``readme`` with "Open in Colab" badges for each notebook of ``repo`` (GitHub ``owner/name``) between
    the two :data:`BADGES` markers (what was between them is replaced)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise SystemExit(f"build_notebooks: bad --repo {repo!r}: give GitHub's OWNER/NAME, e.g. someone/kseg")
    start, end = (readme.find(m) for m in BADGES)
    if start < 0 or end < start:
        raise SystemExit(f"build_notebooks: README.md has no {BADGES[0]} ... {BADGES[1]} block")
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    lines = [f"[![Open {n} in Colab]({badge})](https://colab.research.google.com/github/{repo}/blob/{branch}/"
             f"notebooks/{n}.ipynb) `{n}.ipynb`" for n in NOTEBOOKS]
    return readme[:start] + BADGES[0] + "\n" + "\n".join(lines) + "\n" + readme[end:]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the notebooks (and, with --repo, README's Colab badges).")
    parser.add_argument("--repo", help="GitHub OWNER/NAME where kseg is published: README gets Colab badges to it")
    parser.add_argument("--branch", default="main", help="the branch the badges open (default: main)")
    args = parser.parse_args()
    for name, cells in zip(NOTEBOOKS, (tutorial(), own_data())):
        print("wrote", write(name, cells))
    if args.repo:
        readme = HERE.parent / "README.md"
        readme.write_text(colab_badges(readme.read_text(), args.repo, args.branch))
        print("wrote Colab badges for", args.repo, "into", readme)
