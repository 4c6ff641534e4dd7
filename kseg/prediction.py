"""Predicting files: class maps, masks and overlays written beside each other, never over a user's file.

The library under ``kseg.predict``: :func:`list_images` expands files and folders into inputs,
:func:`output_names` and :func:`check_outputs` decide where each output goes and refuse to
replace anything kseg.predict did not write (its PNGs carry the text chunk ``Software: kseg.predict``),
and :func:`predict_files` runs a :class:`kseg.inference.Predictor` over the inputs and writes
``<name>.png`` (an indexed class map, or a binary model's 0/255 mask) and ``<name>_overlay.png``.
:func:`postprocessor` parses ``--postprocess`` steps; :func:`resolve_palette` and
:func:`foreground_color` pick the colours.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.inference import Predictor, read_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TAG = ("Software", "kseg.predict")  # the PNG text chunk that marks kseg.predict's own outputs
OVERLAY = "_overlay"
FOREGROUND = (230, 30, 30)  # a binary model's overlay colour when no palette gives one (kseg.viz.PALETTES["binary"])


def list_images(inputs, quiet: bool = False) -> list[Path]:
    """Expand files and folders (their images, sorted, not recursive) into a list of image paths.

    In a folder, the PNGs that kseg.predict wrote (class maps, masks, overlays) are not inputs:
    they are left out, with a line saying how many."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS
                           and not q.name.startswith(".tmp-"))  # not a kseg write cut short (kseg.errors.temp_name)
            own = [q for q in found if is_kseg_output(q)]
            if own:
                found = [q for q in found if q not in own]
                if not quiet:
                    print(f"kseg: {p}: left out {len(own)} PNG(s) that kseg.predict wrote (class maps and "
                          f"overlays), e.g. {own[0].name}", file=sys.stderr)
            if not found:
                raise KsegError(f"{p}: no images in this folder ({', '.join(IMAGE_EXTS)})"
                                + (" besides kseg.predict's outputs" if own else ""))
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise KsegError(f"{p}: no such file or folder")
    if not out:
        raise KsegError("no input images: give image files or folders")
    return list({p.resolve(): p for p in out}.values())  # each image once, in order


def is_kseg_output(path) -> bool:
    """Whether ``path`` is a PNG that kseg.predict wrote (its ``Software: kseg.predict`` text chunk), or a
    JSON file it wrote (an object whose ``software`` is ``kseg.predict``)."""
    path = Path(path)
    if path.suffix.lower() == ".json" and path.is_file():
        import json

        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("software") == TAG[1]
    if path.suffix.lower() != ".png" or not path.is_file():
        return False
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.info.get(TAG[0]) == TAG[1]
    except Exception:  # not a readable PNG: not ours
        return False


def output_names(paths) -> list[str]:
    """The output name (without ``.png``) of each input: its stem; inputs sharing a stem keep their
    extension (``a.jpg``), then add their folder's name (``day_a``, ``day_a.jpg``).

    Raises :class:`KsegError` naming two inputs whose outputs (class map or overlay) would still
    be the same file (compared without case, as on macOS and Windows disks)."""
    paths = [Path(p) for p in paths]
    levels = (lambda p: p.stem, lambda p: p.name, lambda p: f"{p.parent.name}_{p.stem}",
              lambda p: f"{p.parent.name}_{p.name}")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(p.stem.casefold(), []).append(i)
    names = [p.stem for p in paths]
    for members in groups.values():
        if len(members) < 2:
            continue
        for level in levels:
            cand = [level(paths[i]) for i in members]
            if len({c.casefold() for c in cand}) == len(cand):
                break
        for i, c in zip(members, cand):
            names[i] = c
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        for kind in ("", OVERLAY):
            key = f"{name}{kind}.png".casefold()
            if key in seen and seen[key] != i:
                raise KsegError(f"{paths[seen[key]]} and {paths[i]} would both write {name}{kind}.png: rename one "
                                f"or predict them into separate --out folders")
            seen[key] = i
    return names


def check_outputs(inputs, outputs) -> None:
    """Refuse (:class:`KsegError`, one line) an output path that is one of the ``inputs`` or another
    existing file that kseg.predict did not write; kseg.predict's own earlier outputs may be replaced."""
    inputs = [Path(p) for p in inputs]
    resolved = {p.resolve() for p in inputs}
    for q in map(Path, outputs):
        if not (q.exists() or q.is_symlink()):
            continue
        same = q.resolve() in resolved or any(_samefile(q, p) for p in inputs)
        if same:
            raise KsegError(f"{q} is an input image: kseg.predict never writes over its inputs; "
                            f"choose another --out")
        if not is_kseg_output(q):
            raise KsegError(f"{q} exists and kseg.predict did not write it: it is left alone; "
                            f"choose another --out or move the file")


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def postprocessor(spec: str | None):
    """Parse ``--postprocess`` into a function on label maps (None when ``spec`` is empty).

    ``spec`` is a comma-separated list of steps from :mod:`kseg.postprocess`,
    e.g. ``open:3,close:3,min-area:64`` (see ``python -m kseg.predict --help``).
    """
    if not spec:
        return None
    from kseg import postprocess
    steps = []
    for item in spec.split(","):
        name, _, arg = item.strip().partition(":")
        name = name.strip().lower().replace("_", "-")
        if name not in POSTPROCESS_STEPS:
            raise KsegError(f"bad --postprocess step {item!r}: choose from {', '.join(POSTPROCESS_STEPS)}")
        try:
            value = int(arg) if arg else POSTPROCESS_STEPS[name][1]
        except ValueError:
            raise KsegError(f"bad --postprocess step {item!r}: the value after ':' must be an integer") from None
        if name in ("open", "close") and (value < 3 or value % 2 == 0):
            raise KsegError(f"bad --postprocess step {item!r}: the kernel must be odd and at least 3")
        steps.append((getattr(postprocess, POSTPROCESS_STEPS[name][0]), value))

    def run(label_map, num_classes=None):
        for fn, value in steps:
            label_map = fn(label_map, value)
        return label_map

    return run


# step name → (kseg.postprocess function, default value); each is fn(label_map, value)
POSTPROCESS_STEPS = {"open": ("opening", 3), "close": ("closing", 3), "min-area": ("remove_small_regions", 64)}


def resolve_palette(spec, num_classes: int, model_path=None):
    """A palette for :mod:`kseg.viz`: a built-in name, colours from a palette file, or a guess by class count."""
    from kseg import viz

    if spec:
        if spec in viz.PALETTES:
            if len(viz.PALETTES[spec]) != num_classes:
                raise KsegError(f"{model_path or 'the model'}: the model predicts {num_classes} classes but the "
                                f"{spec} palette has {len(viz.PALETTES[spec])}: was it trained for another mask?")
            return spec
        path = Path(spec)
        if not path.is_file():
            raise KsegError(f"bad --palette {spec!r}: give {', '.join(viz.PALETTES)} or a palette file")
        from kseg.data.folder import read_palette

        names, colors, _ = read_palette(path)
        if len(names) != num_classes:
            raise KsegError(f"{path}: the palette has {len(names)} classes but the model predicts {num_classes}")
        return colors
    return viz.guess_palette(num_classes)


def foreground_color(spec, info_colors, model_path):
    """A binary model's overlay colour: the palette file's second colour, run.json's, else red."""
    if spec:
        path = Path(spec)
        if not path.is_file():
            raise KsegError(f"bad --palette {spec!r}: a binary model takes a palette file of two classes "
                            f"(background, foreground)")
        from kseg.data.folder import read_palette

        names, colors, _ = read_palette(path)
        if len(names) != 2:
            raise KsegError(f"{path}: the palette has {len(names)} classes but the binary model {model_path} "
                            f"predicts two (background, foreground)")
        return tuple(int(v) for v in colors[1])
    if info_colors is not None and len(info_colors) == 2:
        return tuple(int(v) for v in info_colors[1])
    return FOREGROUND


def save_png(path, image) -> None:
    """Write a PIL image as PNG, marked as kseg.predict's (``Software`` text chunk), atomically."""
    from PIL.PngImagePlugin import PngInfo

    from kseg.errors import atomic_path

    info = PngInfo()
    info.add_text(*TAG)
    with atomic_path(path, "prediction") as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def class_map_image(class_map, num_classes: int, palette=None):
    """An indexed ("P") PIL image: pixel values are class ids (255 outside [0, C)), colours the palette's."""
    from PIL import Image

    from kseg import viz

    lab = np.asarray(class_map).astype(np.int64)
    if num_classes > 255:
        raise KsegError(f"an indexed PNG holds at most 255 classes, the model predicts {num_classes}")
    lab = np.where((lab < 0) | (lab >= num_classes), 255, lab).astype(np.uint8)
    pal = np.zeros((256, 3), np.uint8)
    pal[:num_classes] = viz.palette(num_classes, palette)[:num_classes]
    im = Image.frombytes("P", (lab.shape[1], lab.shape[0]), np.ascontiguousarray(lab).tobytes())
    im.putpalette(pal.ravel().tolist())
    return im


def binary_overlay(image, mask, color=FOREGROUND, alpha: float = 0.5) -> np.ndarray:
    """``color`` blended at ``alpha`` over the foreground pixels of ``image``; the rest unchanged (uint8)."""
    img = np.asarray(image, np.float32)
    col = np.asarray(color, np.float32).reshape(1, 1, 3)
    out = np.where(np.asarray(mask, bool)[..., None], (1 - alpha) * img + alpha * col, img)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def predict_files(model, paths, out_dir, predictor=None, palette=None, alpha: float = 0.5,
                  post=None, progress: bool = True, skipped: list | None = None, threshold: float = 0.5,
                  foreground=FOREGROUND, class_names=None) -> list[dict]:
    """Predict every image in ``paths``; write ``<name>.png`` and ``<name>_overlay.png`` into ``out_dir``.

    ``predictor`` is a :class:`~kseg.inference.Predictor` or :class:`~kseg.inference.SavedModelPredictor`
    (default: a Predictor of ``model``). Names follow :func:`output_names`; before anything is written,
    :func:`check_outputs` refuses an output that is an input or a file kseg.predict did not write. A binary model
    (``predictor.num_classes == 1``) writes a 0/255 mask (``p >= threshold``) and an overlay of
    ``foreground`` over the foreground pixels.

    Returns one dict per image: ``image``, ``class_map`` (the class map's or mask's path),
    ``overlay``, ``size`` (W, H) and ``binary``. An image that cannot be decoded raises
    :class:`KsegError`; when ``skipped`` is a list, it is instead left out with a warning naming it
    and appended there.
    """
    predictor = predictor or Predictor(model)
    out_dir = Path(out_dir)
    paths = [Path(p) for p in paths]
    planned = _plan_outputs(paths, out_dir)
    binary = predictor.num_classes == 1
    results = []
    bar = _Progress(len(paths), enabled=progress)
    for i, (path, (cm_path, ov_path)) in enumerate(zip(paths, planned)):
        image = _read_or_skip(path, skipped, progress)
        if image is None:
            continue
        class_map = _class_map(predictor(image), predictor.num_classes, threshold, post)
        write_prediction(image, class_map, cm_path, ov_path, predictor.num_classes, palette, alpha, foreground,
                         class_names)
        results.append({"image": str(path), "class_map": str(cm_path), "overlay": str(ov_path),
                        "size": (image.shape[1], image.shape[0]), "binary": binary})
        bar.update(i + 1, path.name)
    bar.close()
    return results


def _plan_outputs(paths, out_dir: Path) -> list[tuple[Path, Path]]:
    """``(class map, overlay)`` paths of each input, checked (:func:`check_outputs`), in a created ``out_dir``."""
    return plan_outputs(paths, out_dir, (".png", f"{OVERLAY}.png"))


def plan_outputs(paths, out_dir, suffixes) -> list[tuple[Path, ...]]:
    """The output paths of each input (its output name + each of ``suffixes``), checked
    (:func:`check_outputs`), in a created ``out_dir``."""
    out_dir = Path(out_dir)
    planned = [tuple(out_dir / f"{n}{s}" for s in suffixes) for n in output_names(paths)]
    check_outputs(paths, [q for files in planned for q in files])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    return planned


def _read_or_skip(path, skipped: list | None, progress: bool):
    """The decoded image; None (with a warning, ``path`` appended to ``skipped``) when it is unreadable and
    ``skipped`` is a list."""
    try:
        return read_image(path)
    except KsegError as err:
        if skipped is None:
            raise
        print(f"\nkseg: warning: {err}; skipping this image" if progress else
              f"kseg: warning: {err}; skipping this image", file=sys.stderr)
        skipped.append(str(path))
        return None


def _class_map(probs, num_classes: int, threshold: float, post=None) -> np.ndarray:
    """Class ids from probabilities (binary: ``p >= threshold`` as 0/1), then post-processed."""
    binary = num_classes == 1
    if binary:
        from kseg.metrics import binary_labels

        class_map = binary_labels(probs, threshold)
    else:
        class_map = np.argmax(probs, axis=-1)
    if post is not None:
        class_map = post(class_map, 2 if binary else num_classes)
    return class_map


def write_prediction(image, class_map, cm_path, ov_path, num_classes: int, palette=None, alpha: float = 0.5,
                     foreground=FOREGROUND, class_names=None) -> None:
    """Write one image's class map (binary, ``num_classes`` 1: a 0/255 mask) and overlay as kseg.predict's PNGs;
    with ``class_names``, the overlay has a legend strip below it naming the classes it shows, largest first."""
    from PIL import Image

    from kseg import viz

    if num_classes == 1:
        save_png(cm_path, Image.fromarray((np.asarray(class_map) > 0).astype(np.uint8) * 255, "L"))
        save_png(ov_path, Image.fromarray(binary_overlay(image, class_map > 0, foreground, alpha)))
    else:
        save_png(cm_path, class_map_image(class_map, num_classes, palette))
        overlay = viz.overlay(image, class_map, num_classes, palette, alpha=alpha)
        if class_names is not None:
            overlay = with_legend(overlay, class_map, class_names, viz.palette(num_classes, palette))
        save_png(ov_path, Image.fromarray(overlay))


def with_legend(overlay, class_map, class_names, colors) -> np.ndarray:
    """``overlay`` with a strip below naming the classes of ``class_map`` (largest area first) beside their colours."""
    from kseg.detection.panoptic_draw import legend_strip

    ids, counts = np.unique(np.asarray(class_map), return_counts=True)
    shown = [(class_names[i], colors[i]) for i in ids[np.argsort(-counts)] if 0 <= i < len(class_names)]
    scale = max(0.4, min(0.8, overlay.shape[1] / 900))
    return np.concatenate([overlay, legend_strip(overlay.shape[1], shown, scale)], axis=0)


class _Progress:
    """A one-line progress bar over files, on stderr."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.t0 = total, enabled, time.time()

    def update(self, done: int, name: str = "") -> None:
        if not self.enabled:
            return
        frac = done / max(self.total, 1)
        rate = done / max(time.time() - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        print(f"\r  [{'#' * int(30 * frac):<30}] {done}/{self.total} {rate:5.2f} img/s, eta {eta:4.0f}s  "
              f"{name[:30]:<30}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)

