"""Predict class maps for new images: ``python -m kseg.predict --model best.keras IMAGES_OR_FOLDER --out DIR``.

``--model`` is a ``.keras`` file or a SavedModel folder that ``kseg.export`` (or training) wrote, or a
``.onnx``, ``.xml`` (OpenVINO) or ``.tflite`` (LiteRT) file that ``kseg export --format ...`` wrote, run in
that runtime (``--runtime`` names it; by default it is read from the path, see :mod:`kseg.runtimes`), or the
name of a pretrained segmenter (``deeplabv3-resnet50-voc``, ``segformer-b0-ade20k``, ...:
:mod:`kseg.models.presets`; downloaded once).
For every input image (files, or the images in a folder) it writes, at the
image's own resolution:

- ``DIR/<name>.png``          the class map as an indexed PNG: pixel values are
                              class ids, the PNG's palette is the classes' colours;
                              for a binary model (one output channel) the mask as a
                              greyscale PNG, 255 = foreground (``p >= --threshold``), 0 = background;
- ``DIR/<name>_overlay.png``  the colours blended over the input (binary: the foreground in red,
                              or the palette's foreground colour, at ``--alpha``); where the model's
                              run (run.json) or preset names its classes, a legend strip below it
                              names the classes shown, largest first.

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
resized back bilinearly before the argmax (binary: before the threshold). A SavedModel and the
ONNX, OpenVINO and LiteRT exports do their own resizing (:mod:`kseg.export`).

Test-time augmentation, as in the multi-scale literature (DeepLab, PSPNet), for ``.keras`` models:
``--scales 0.5,0.75,1,1.5,2`` runs the model at each scale of that base size
(rounded to multiples of 32) and ``--flip`` also on the mirrored image; each
probability map is resized back to the input and they are merged by
``--merge mean`` (average, the default) or ``--merge max``. A multi-scale model (``kseg train --multiscale``)
merges its ``--scales`` by its own learned attention instead (hierarchical: any scales; explicit attention:
its trained ones), and ``--attention-maps`` writes each scale's weight beside the class map
(:mod:`kseg.attention_maps`).

An instance model (``--model maskrcnn-coco``, a Mask R-CNN's ``.keras`` file or its SavedModel export) writes
``<name>_instances.png`` (masks, boxes and ``name score`` labels drawn), ``<name>_instances.json`` and
``<name>_ids.png`` (uint16 instance ids) for the instances scoring at least ``--score-threshold``
(:mod:`kseg.detection.prediction`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from kseg.attention_maps import check_model, write_attention_maps
from kseg.commandline import command_parser
from kseg.errors import KsegError, cli_entry
# the library this command runs; every name stays importable from kseg.predict
from kseg.inference import (MERGES, Predictor, RuntimePredictor, SavedModelPredictor, flexible,  # noqa: F401
                            multiscale_split,
                            parse_scales, read_image)
from kseg.prediction import (FOREGROUND, IMAGE_EXTS, OVERLAY, POSTPROCESS_STEPS, TAG, _Progress,  # noqa: F401
                             _samefile, binary_overlay, check_outputs, class_map_image, foreground_color,
                             is_kseg_output, list_images, output_names, postprocessor, predict_files,
                             resolve_palette, save_png)
from kseg.runtimes import RUNTIME_NAMES, RUNTIMES, check_runtime

_foreground_color = foreground_color  # its name before kseg.prediction


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser("kseg.predict", __doc__.split("\n\n")[0],
                       epilog="post-processing steps (--postprocess, comma-separated, in order): "
                              "open:K, close:K (per-class morphological opening/closing with an "
                              "elliptical K x K kernel, K odd), min-area:N (connected regions under "
                              "N pixels take the class of the nearest remaining pixels); "
                              "see kseg.postprocess")
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--model", required=True, help="a .keras model file, a SavedModel folder, or a .onnx, .xml "
                                                  "(OpenVINO) or .tflite (LiteRT) file from kseg export; a "
                                                  "pretrained segmenter (deeplabv3-resnet50-voc, segformer-b0-ade20k, "
                                                  "..., kseg.models.presets); or an instance model: maskrcnn-coco, "
                                                  "or a Mask R-CNN's .keras / export")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help="what runs --model (default: read from it: .keras keras, a folder saved_model, "
                        ".onnx onnx, .xml openvino, .tflite litert)")
    p.add_argument("--out", required=True, help="output folder (existing files that kseg.predict did not "
                                                "write are never replaced)")
    p.add_argument("--size", default=None, help=".keras models: base input size H or HxW, multiples of 32 "
                                                "(default: the model's, else run.json's, else the image's "
                                                "rounded to 32)")
    p.add_argument("--scales", default=None, help=".keras models: test-time scales of the base size, "
                                                  "e.g. 0.5,0.75,1,1.5,2, merged by --merge; a multi-scale model "
                                                  "(kseg train --multiscale) merges them by its own attention "
                                                  "(default: its trained scales)")
    p.add_argument("--attention-maps", action="store_true",
                   help="multi-scale models: also write each scale's attention weight as <name>_attention_<scale>.png")
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
    p.add_argument("--score-threshold", type=float, default=None,
                   help="instance models: draw and write the instances scoring at least this (default 0.5)")
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


def _predictor(args, info: dict, taken: list):
    """``(predictor, model)``: a SavedModel's, or a ``.keras`` model's with the size (``--size``, else
    run.json's) and test-time augmentation asked for; the model is None for a SavedModel."""
    model_path = Path(args.model)
    if info.get("preset"):
        return Predictor(info["preset"], size=args.size, short_side=info["short_side"], scales=args.scales,
                         flip=args.flip, merge=args.merge), info["preset"]
    runtime = check_runtime(model_path, args.runtime) if model_path.exists() else args.runtime
    if runtime in ("onnx", "openvino", "litert"):
        if args.tta:
            raise KsegError(f"{model_path}: {' and '.join(args.tta)} need{'s' if len(args.tta) == 1 else ''} a .keras "
                            f"model; {RUNTIME_NAMES[runtime]} model serves each image at its own size")
        return RuntimePredictor(model_path, runtime), None
    if model_path.is_dir() and runtime == "keras":
        model_path = model_path / "best.keras"
    if model_path.is_dir():
        if args.tta:
            raise KsegError(f"{model_path}: {' and '.join(args.tta)} need{'s' if len(args.tta) == 1 else ''} a .keras "
                            f"model; a SavedModel serves each image at its own size")
        return SavedModelPredictor(model_path), None
    from kseg.saving import load_keras_model
    from kseg.shapes import fixed_input_size

    model = load_keras_model(model_path)
    if args.output_stride is not None:
        from kseg.models import with_output_stride

        model = with_output_stride(model, args.output_stride)
    size = args.size
    if size is None and info.get("size") and fixed_input_size(model) is None:
        size = "x".join(str(int(v)) for v in info["size"])
        taken.append(f"--size {size}")
    tta, own = multiscale_split(model, args.scales, "--scales" in args.tta, "--merge" in args.tta)
    return Predictor(model, size=size, scales=tta, flip=args.flip, merge=args.merge, model_scales=own), model


def _threshold(args, info: dict, taken: list, c: int) -> float:
    """A binary model's threshold: ``--threshold``, else run.json's, else 0.5; refused for a multi-class model."""
    if c != 1 and args.threshold is not None:
        raise KsegError(f"{Path(args.model)}: --threshold is for binary models (one output channel); "
                        f"this one predicts {c} classes")
    threshold = args.threshold
    if c == 1 and threshold is None and info.get("threshold") is not None:
        threshold = float(info["threshold"])
        taken.append(f"--threshold {threshold:g}")
    return 0.5 if threshold is None else threshold


def _colours(args, info: dict, taken: list, c: int):
    """``(palette, foreground)``: the class colours (``--palette``, else run.json's, else kseg's) and a
    binary model's overlay colour."""
    binary = c == 1
    info_colors = info.get("colors")
    if info_colors is not None and args.palette is None and len(info_colors) == (2 if binary else c):
        taken.append("the class colours")
    else:
        info_colors = None
    if info.get("class_names"):
        names = list(info["class_names"])
        taken.insert(0, f"{len(names)} classes ({', '.join(map(str, names[:5]))}{', ...' if len(names) > 5 else ''})")
    if binary:
        return None, foreground_color(args.palette, info_colors, Path(args.model))
    palette = (np.asarray(info_colors, np.uint8) if info_colors is not None
               else resolve_palette(args.palette, c, args.model))
    return palette, FOREGROUND


def _legend_names(info: dict, c: int):
    """The class names the overlays' legend shows (a multi-class model whose run or preset names its classes)."""
    names = info.get("class_names")
    return list(names) if c > 1 and names and len(names) == c else None


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    paths = list_images(args.inputs)
    from kseg.detection.prediction import predict_instances_command

    done = predict_instances_command(args, paths)  # None: not an instance model
    if done is not None:
        return done
    if args.score_threshold is not None:
        raise KsegError(f"{args.model}: --score-threshold applies to instance models; this is a semantic model")
    post = postprocessor(args.postprocess)
    from kseg.runinfo import read_run_info

    model_path = Path(args.model)
    info = (read_run_info(model_path) if model_path.exists() else None) or {}
    taken = []
    from kseg.models.presets import is_preset, load_preset

    if is_preset(args.model):
        preset, info = load_preset(args.model)
        info.update(preset=preset, _path=f"preset {args.model}: {info['source']}")
    predictor, model = _predictor(args, info, taken)
    if args.attention_maps:
        check_model(predictor.model if model is not None else None, model_path)
    c = predictor.num_classes
    threshold = _threshold(args, info, taken, c)
    palette, foreground = _colours(args, info, taken, c)
    if info:
        print(f"kseg: from {info['_path']}: {', '.join(taken)}", file=sys.stderr)
    t0 = time.time()
    skipped = []
    results = predict_files(model, paths, args.out, predictor, palette=palette, alpha=args.alpha, post=post,
                            progress=not args.quiet and sys.stderr.isatty(), skipped=skipped, threshold=threshold,
                            foreground=foreground, class_names=_legend_names(info, c))
    if not results:
        raise KsegError(f"{paths[0]}: none of the {len(paths)} input images could be read")
    if args.attention_maps:
        write_attention_maps(predictor, results)
    note = f"; skipped {len(skipped)} unreadable image(s): {', '.join(Path(p).name for p in skipped[:3])}" \
        + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "") if skipped else ""
    what = f"masks (0/255, p >= {threshold:g})" if c == 1 else "class maps"
    print(f"kseg: wrote {len(results)} {what} and overlays to {args.out} in {time.time() - t0:.1f}s{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
