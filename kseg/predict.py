"""Predict class maps for new images: ``python -m kseg.predict --model best.keras IMAGES_OR_FOLDER --out DIR``.

``--model`` is a ``.keras`` file or a SavedModel folder that ``kseg.export`` (or training) wrote.
For every input image (files, or the images in a folder) it writes, at the
image's own resolution:

- ``DIR/<name>.png``          the class map as an indexed PNG: pixel values are
                              class ids, the PNG's palette is the classes' colours;
                              for a binary model (one output channel) the mask as a
                              greyscale PNG, 255 = foreground (``p >= --threshold``), 0 = background;
- ``DIR/<name>_overlay.png``  the colours blended over the input (binary: the foreground in red,
                              or the palette's foreground colour, at ``--alpha``).

``<name>`` is the input's stem (``photo.jpg`` -> ``photo.png``). Inputs that share a stem
(``a.jpg`` and ``a.png``) keep their extension (``a.jpg.png``, ``a.png.png``); files of the
same name in different folders add the folder's name (``day_a.png``, ``night_a.png``). If two
inputs would still write the same file, nothing is written and the command says which.

kseg.predict never writes over a file it did not write: an output path that is an input image
(``--out`` = the input folder and ``gray.png`` in it) or any other existing file is refused,
in one line naming it. Its own outputs carry a PNG text chunk ``Software: kseg.predict``; those
are replaced by a later run, and are skipped when a folder of inputs is listed. Every file is
written under a temporary name and renamed into place.

``run.json`` beside the model (see :mod:`kseg.runinfo`) gives the class colours, the size and a
binary model's threshold when the command line does not; the command says in one line what it took.

The image is resized (bilinear) to the model's input size (its fixed size, or
``--size``, or run.json's, or the nearest multiples of 32), and the predicted probabilities are
resized back bilinearly before the argmax (binary: before the threshold). A SavedModel
does its own resizing (:mod:`kseg.export`).

Test-time augmentation, as in the multi-scale literature (DeepLab, PSPNet), for ``.keras`` models:
``--scales 0.5,0.75,1,1.5,2`` runs the model at each scale of that base size
(rounded to multiples of 32) and ``--flip`` also on the mirrored image; each
probability map is resized back to the input and they are merged by
``--merge mean`` (average, the default) or ``--merge max``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError, cli_entry

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
MERGES = ("mean", "max")
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
    """Whether ``path`` is a PNG that kseg.predict wrote (its ``Software: kseg.predict`` text chunk)."""
    path = Path(path)
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


def read_image(path) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3), as the training pipeline does."""
    import tensorflow as tf

    from kseg.data.pipeline import decode_image

    try:
        return decode_image(tf.constant(str(path))).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as err:
        raise KsegError(f"{path}: not a readable image ({err.message.splitlines()[0]})") from None


def parse_scales(text) -> tuple[float, ...]:
    """``"0.5,0.75,1"`` → (0.5, 0.75, 1.0); each scale must be positive."""
    if isinstance(text, (int, float)):
        text = str(text)
    if not isinstance(text, str):
        vals = tuple(float(v) for v in text)
    else:
        try:
            vals = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise KsegError(f"bad --scales {text!r}: give numbers separated by commas, e.g. 0.75,1,1.25") from None
    if not vals or any(not v > 0 for v in vals):
        raise KsegError(f"bad --scales {text!r}: give positive numbers, e.g. 0.5,0.75,1,1.5,2")
    return vals


def flexible(model):
    """The same model (shared weights) with an input of any height and width."""
    import keras

    from kseg.export import fixed_input_size

    if fixed_input_size(model) is None:
        return model
    cfg = model.get_config()
    try:
        first = cfg["layers"][0]
        if first["class_name"] != "InputLayer":
            raise KeyError
        first["config"]["batch_shape"] = [None, None, None, first["config"]["batch_shape"][-1]]
        clone = model.__class__.from_config(cfg)
    except (KeyError, TypeError, ValueError, IndexError):
        raise KsegError("this model has a fixed input size and cannot be rebuilt for other sizes: "
                        "predict at its own size (no --scales, no --size)") from None
    clone.set_weights(model.get_weights())
    return clone


class Predictor:
    """Per-pixel probabilities for one image at its own size, with optional multi-scale and flip TTA.

    ``size``: the base (H, W) the image is resized to (default: the model's
    fixed input size, else the image's size rounded to multiples of 32).
    ``scales`` multiply the base size; ``flip`` adds mirrored copies;
    ``merge`` is "mean" or "max" over all the resized-back probability maps.
    """

    def __init__(self, model, size=None, scales=(1.0,), flip: bool = False, merge: str = "mean"):
        from kseg.export import fixed_input_size

        if merge not in MERGES:
            raise KsegError(f"bad merge {merge!r}: choose one of {', '.join(MERGES)}")
        self.model = model
        self.fixed = fixed_input_size(model)
        if size is not None:
            from kseg.data.pipeline import check_size

            size = check_size(size)
        self.size = size
        self.scales = parse_scales(scales)
        self.flip = bool(flip)
        self.merge = merge
        self._flex = None
        self.num_classes = int(model.outputs[0].shape[-1])

    def base_size(self, h: int, w: int) -> tuple[int, int]:
        from kseg.export import nearest_multiple

        if self.size is not None:
            return self.size
        if self.fixed is not None:
            return self.fixed
        return nearest_multiple(h), nearest_multiple(w)

    def _net(self, size):
        if self.fixed is None or tuple(size) == self.fixed:
            return self.model
        if self._flex is None:
            self._flex = flexible(self.model)
        return self._flex

    def __call__(self, image) -> np.ndarray:
        import tensorflow as tf

        from kseg.export import nearest_multiple

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise KsegError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        h, w = image.shape[:2]
        bh, bw = self.base_size(h, w)
        x = tf.cast(image[None], tf.float32)
        acc, n = None, 0
        for s in self.scales:
            size = (nearest_multiple(bh * s), nearest_multiple(bw * s))
            xs = tf.image.resize(x, size, method="bilinear", antialias=False)
            batch = tf.concat([xs, tf.reverse(xs, [2])], 0) if self.flip else xs
            probs = tf.cast(self._net(size)(batch, training=False), tf.float32)
            if self.flip:
                probs = tf.concat([probs[:1], tf.reverse(probs[1:], [2])], 0)
            probs = tf.image.resize(probs, (h, w), method="bilinear", antialias=False).numpy()
            for p in probs:
                if acc is None:
                    acc = p.copy()
                elif self.merge == "max":
                    np.maximum(acc, p, out=acc)
                else:
                    acc += p
                n += 1
        return acc / n if self.merge == "mean" else acc


class SavedModelPredictor:
    """Per-pixel probabilities for one image at its own size from a SavedModel's ``serving_default``.

    kseg's export resizes inside the signature; a signature with a fixed input size gets the image
    resized to it, and its output is resized back bilinearly. ``num_classes`` is the output's
    channels (1 for a binary model)."""

    def __init__(self, path):
        from kseg.evaluate import load_predictor

        self.path = Path(path)
        self.predict, info = load_predictor(self.path)
        self.size = info["input_size"]
        if info.get("num_classes") is None:
            raise KsegError(f"{self.path}: its serving_default returns no per-pixel probabilities (N, H, W, C) "
                            f"that kseg.predict can read")
        self.num_classes = int(info["num_classes"])

    def __call__(self, image) -> np.ndarray:
        import tensorflow as tf

        image = np.asarray(image)
        h, w = image.shape[:2]
        x = image[None].astype(np.float32)
        if self.size is not None and tuple(self.size) != (h, w):
            x = tf.image.resize(x, self.size, method="bilinear", antialias=False).numpy()
        probs = np.asarray(self.predict(x), np.float32)[0]
        if probs.shape[:2] != (h, w):
            probs = tf.image.resize(probs[None], (h, w), method="bilinear", antialias=False).numpy()[0]
        return probs


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
                  foreground=FOREGROUND) -> list[dict]:
    """Predict every image in ``paths``; write ``<name>.png`` and ``<name>_overlay.png`` into ``out_dir``.

    ``predictor`` is a :class:`Predictor` or :class:`SavedModelPredictor` (default: a Predictor of
    ``model``). Names follow :func:`output_names`; before anything is written, :func:`check_outputs`
    refuses an output that is an input or a file kseg.predict did not write. A binary model
    (``predictor.num_classes == 1``) writes a 0/255 mask (``p >= threshold``) and an overlay of
    ``foreground`` over the foreground pixels.

    Returns one dict per image: ``image``, ``class_map`` (the class map's or mask's path),
    ``overlay``, ``size`` (W, H) and ``binary``. An image that cannot be decoded raises
    :class:`KsegError`; when ``skipped`` is a list, it is instead left out with a warning naming it
    and appended there.
    """
    from PIL import Image

    from kseg import viz

    predictor = predictor or Predictor(model)
    out_dir = Path(out_dir)
    paths = [Path(p) for p in paths]
    names = output_names(paths)
    planned = [(out_dir / f"{n}.png", out_dir / f"{n}{OVERLAY}.png") for n in names]
    check_outputs(paths, [q for pair in planned for q in pair])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    c = predictor.num_classes
    binary = c == 1
    results = []
    bar = _Progress(len(paths), enabled=progress)
    for i, (path, (cm_path, ov_path)) in enumerate(zip(paths, planned)):
        try:
            image = read_image(path)
        except KsegError as err:
            if skipped is None:
                raise
            print(f"\nkseg: warning: {err}; skipping this image" if progress else
                  f"kseg: warning: {err}; skipping this image", file=sys.stderr)
            skipped.append(str(path))
            continue
        probs = predictor(image)
        if binary:
            class_map = (probs[..., 0] >= threshold).astype(np.int64)
        else:
            class_map = np.argmax(probs, axis=-1)
        if post is not None:
            class_map = post(class_map, 2 if binary else c)
        if binary:
            save_png(cm_path, Image.fromarray((np.asarray(class_map) > 0).astype(np.uint8) * 255, "L"))
            save_png(ov_path, Image.fromarray(binary_overlay(image, class_map > 0, foreground, alpha)))
        else:
            save_png(cm_path, class_map_image(class_map, c, palette))
            save_png(ov_path, Image.fromarray(viz.overlay(image, class_map, c, palette, alpha=alpha)))
        results.append({"image": str(path), "class_map": str(cm_path), "overlay": str(ov_path),
                        "size": (image.shape[1], image.shape[0]), "binary": binary})
        bar.update(i + 1, path.name)
    bar.close()
    return results


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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kseg.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="post-processing steps (--postprocess, comma-separated, in order): "
                                       "open:K, close:K (per-class morphological opening/closing with an "
                                       "elliptical K x K kernel, K odd), min-area:N (connected regions under "
                                       "N pixels take the class of the nearest remaining pixels); "
                                       "see kseg.postprocess")
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--model", required=True, help="a .keras model file or a SavedModel folder")
    p.add_argument("--out", required=True, help="output folder (existing files that kseg.predict did not "
                                                "write are never replaced)")
    p.add_argument("--size", default=None, help=".keras models: base input size H or HxW, multiples of 32 "
                                                "(default: the model's, else run.json's, else the image's "
                                                "rounded to 32)")
    p.add_argument("--scales", default=None, help=".keras models: test-time scales of the base size, "
                                                  "e.g. 0.5,0.75,1,1.5,2")
    p.add_argument("--flip", action="store_true", help=".keras models: also predict on the mirrored image")
    p.add_argument("--merge", choices=MERGES, default=None, help=".keras models: how scales and flips are "
                                                                 "merged (default mean)")
    p.add_argument("--output-stride", type=int, default=None, choices=(8, 16, 32), metavar="N",
                   help="run a .keras DeepLabV3+ (or other atrous model) at output stride N, e.g. 8 for one "
                        "trained at 16")
    p.add_argument("--postprocess", default=None, help="e.g. open:3,close:3,min-area:64")
    p.add_argument("--palette", default=None, help="surfaces, regions or a palette file (default: run.json's "
                                                   "colours, else the built-in one with the model's class count)")
    p.add_argument("--threshold", type=float, default=None,
                   help="binary models: foreground where p >= this (default: run.json's, else 0.5)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise KsegError(f"bad --alpha {args.alpha}: give a number between 0 and 1")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise KsegError(f"bad --threshold {args.threshold}: give a probability between 0 and 1, e.g. 0.5")
    args.tta = [flag for flag, given in (("--size", args.size is not None), ("--scales", args.scales is not None),
                                         ("--flip", args.flip), ("--merge", args.merge is not None),
                                         ("--output-stride", args.output_stride is not None)) if given]
    args.scales = parse_scales(args.scales if args.scales is not None else "1")
    args.merge = args.merge or "mean"
    return args


def _foreground_color(spec, info_colors, model_path):
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


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    paths = list_images(args.inputs)
    post = postprocessor(args.postprocess)
    from kseg.runinfo import read_run_info

    model_path = Path(args.model)
    info = read_run_info(model_path) if model_path.exists() else None
    info = info or {}
    taken = []
    if model_path.is_dir():
        if args.tta:
            raise KsegError(f"{model_path}: {' and '.join(args.tta)} need{'s' if len(args.tta) == 1 else ''} a .keras "
                            f"model; a SavedModel serves each image at its own size")
        predictor = SavedModelPredictor(model_path)
        model = None
    else:
        from kseg.export import fixed_input_size, load_model

        model = load_model(model_path)
        if args.output_stride is not None:
            from kseg.models import with_output_stride

            model = with_output_stride(model, args.output_stride)
        size = args.size
        if size is None and info.get("size") and fixed_input_size(model) is None:
            size = "x".join(str(int(v)) for v in info["size"])
            taken.append(f"--size {size}")
        predictor = Predictor(model, size=size, scales=args.scales, flip=args.flip, merge=args.merge)
    c = predictor.num_classes
    binary = c == 1
    if not binary and args.threshold is not None:
        raise KsegError(f"{model_path}: --threshold is for binary models (one output channel); "
                        f"this one predicts {c} classes")
    threshold = args.threshold
    if binary and threshold is None and info.get("threshold") is not None:
        threshold = float(info["threshold"])
        taken.append(f"--threshold {threshold:g}")
    threshold = 0.5 if threshold is None else threshold
    info_colors = info.get("colors")
    if info_colors is not None and args.palette is None and len(info_colors) == (2 if binary else c):
        taken.append("the class colours")
    else:
        info_colors = None
    if info.get("class_names"):
        names = list(info["class_names"])
        taken.insert(0, f"{len(names)} classes ({', '.join(map(str, names[:5]))}{', ...' if len(names) > 5 else ''})")
    if binary:
        foreground = _foreground_color(args.palette, info_colors, model_path)
        palette = None
    else:
        foreground = FOREGROUND
        palette = (np.asarray(info_colors, np.uint8) if info_colors is not None
                   else resolve_palette(args.palette, c, args.model))
    if info:
        print(f"kseg: from {info['_path']}: {', '.join(taken)}", file=sys.stderr)
    t0 = time.time()
    skipped = []
    results = predict_files(model, paths, args.out, predictor, palette=palette, alpha=args.alpha, post=post,
                            progress=not args.quiet and sys.stderr.isatty(), skipped=skipped, threshold=threshold, foreground=foreground)
    if not results:
        raise KsegError(f"{paths[0]}: none of the {len(paths)} input images could be read")
    note = f"; skipped {len(skipped)} unreadable image(s): {', '.join(Path(p).name for p in skipped[:3])}" \
        + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "") if skipped else ""
    what = f"masks (0/255, p >= {threshold:g})" if binary else "class maps"
    print(f"kseg: wrote {len(results)} {what} and overlays to {args.out} in {time.time() - t0:.1f}s{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
