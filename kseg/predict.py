"""Predict class maps for new images: ``python -m kseg.predict --model best.keras IMAGES_OR_FOLDER --out DIR``.

For every input image (files, or the images in a folder) it writes, at the
image's own resolution:

- ``DIR/<name>.png``          the class map as an indexed PNG: pixel values are
                              class ids, the PNG's palette is the dataset's colours;
- ``DIR/<name>_overlay.png``  the colours blended over the input.

The image is resized (bilinear) to the model's input size (its fixed size, or
``--size``, or the nearest multiples of 32), and the predicted probabilities are
resized back bilinearly before the argmax.

Test-time augmentation, as in the multi-scale literature (DeepLab, PSPNet):
``--scales 0.5,0.75,1,1.5,2`` runs the model at each scale of that base size
(rounded to multiples of 32) and ``--flip`` also on the mirrored image; each
probability map is resized back to the input and they are merged by
``--merge mean`` (average, the default) or ``--merge max``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError, cli_entry

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
MERGES = ("mean", "max")


def list_images(inputs) -> list[Path]:
    """Expand files and folders (their images, sorted, not recursive) into a list of image paths."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise KsegError(f"{p}: no images in this folder ({', '.join(IMAGE_EXTS)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise KsegError(f"{p}: no such file or folder")
    if not out:
        raise KsegError("no input images: give image files or folders")
    return list({p.resolve(): p for p in out}.values())  # each image once, in order


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


def predict_files(model, paths, out_dir, predictor: Predictor | None = None, palette=None, alpha: float = 0.5,
                  post=None, progress: bool = True, skipped: list | None = None) -> list[dict]:
    """Predict every image in ``paths``; write ``<name>.png`` and ``<name>_overlay.png`` into ``out_dir``.

    Returns one dict per image: ``image``, ``class_map``, ``overlay`` (paths) and ``size`` (W, H).
    An image that cannot be decoded raises :class:`KsegError`; when ``skipped``
    is a list, it is instead left out with a warning naming it and appended there.
    """
    from kseg import viz

    predictor = predictor or Predictor(model)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{out_dir}: cannot create the output folder ({err.strerror})") from None
    c = predictor.num_classes
    stems = [Path(p).stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    results = []
    bar = _Progress(len(paths), enabled=progress)
    for i, path in enumerate(paths):
        path = Path(path)
        try:
            image = read_image(path)
        except KsegError as err:
            if skipped is None:
                raise
            print(f"\nkseg: warning: {err}; skipping this image" if progress else
                  f"kseg: warning: {err}; skipping this image", file=sys.stderr)
            skipped.append(str(path))
            continue
        class_map = np.argmax(predictor(image), axis=-1)
        if post is not None:
            class_map = post(class_map, c)
        stem = path.stem if path.stem not in dup else f"{path.parent.name}_{path.stem}"
        cm_path, ov_path = out_dir / f"{stem}.png", out_dir / f"{stem}_overlay.png"
        viz.save_label_png(cm_path, class_map, c, palette)
        viz.save_image(ov_path, viz.overlay(image, class_map, c, palette, alpha=alpha))
        results.append({"image": str(path), "class_map": str(cm_path), "overlay": str(ov_path),
                        "size": (image.shape[1], image.shape[0])})
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
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default=None, help="base input size H or HxW, multiples of 32 "
                                                "(default: the model's, else the image's rounded to 32)")
    p.add_argument("--scales", default="1", help="test-time scales of the base size, e.g. 0.5,0.75,1,1.5,2")
    p.add_argument("--flip", action="store_true", help="also predict on the mirrored image (test-time flip)")
    p.add_argument("--merge", choices=MERGES, default="mean", help="how scales and flips are merged")
    p.add_argument("--output-stride", type=int, default=None, choices=(8, 16, 32), metavar="N",
                   help="run a DeepLabV3+ (or other atrous model) at output stride N, e.g. 8 for one trained at 16")
    p.add_argument("--postprocess", default=None, help="e.g. open:3,close:3,min-area:64")
    p.add_argument("--palette", default=None, help="surfaces, regions or a palette file "
                                                   "(default: the built-in one with the model's class count)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise KsegError(f"bad --alpha {args.alpha}: give a number between 0 and 1")
    args.scales = parse_scales(args.scales)
    return args


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    paths = list_images(args.inputs)
    post = postprocessor(args.postprocess)
    from kseg.export import load_model

    model = load_model(args.model)
    if args.output_stride is not None:
        from kseg.models import with_output_stride

        model = with_output_stride(model, args.output_stride)
    predictor = Predictor(model, size=args.size, scales=args.scales, flip=args.flip, merge=args.merge)
    palette = resolve_palette(args.palette, predictor.num_classes, args.model)
    t0 = time.time()
    skipped = []
    results = predict_files(model, paths, args.out, predictor, palette=palette, alpha=args.alpha, post=post,
                            progress=not args.quiet, skipped=skipped)
    if not results:
        raise KsegError(f"{paths[0]}: none of the {len(paths)} input images could be read")
    note = f"; skipped {len(skipped)} unreadable image(s): {', '.join(Path(p).name for p in skipped[:3])}" \
        + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "") if skipped else ""
    print(f"kseg: wrote {len(results)} class maps and overlays to {args.out} in {time.time() - t0:.1f}s{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
