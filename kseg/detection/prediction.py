"""``kseg predict`` for instance models: boxes, masks, labels and scores drawn on each photo, and the same as data.

:func:`is_instance_model` recognises an instance model: a preset name (``maskrcnn-coco``,
:mod:`kseg.detection.presets`), a ``.keras`` file holding a :class:`~kseg.detection.maskrcnn.MaskRCNN`
(read from the file's config, before anything is loaded; its class names, and the photo sizes ``min_size``
and ``max_size`` of its predictor, come from ``run.json`` beside it, else ``class i`` and 800 / 1333), or a SavedModel folder that ``kseg export`` wrote for one
(:mod:`kseg.detection.serving`); anything else is a semantic model. :func:`load_instance_predictor` loads it.

:func:`predict_instance_files` writes, per input image (output names as :func:`kseg.prediction.output_names`
gives them, checked by :func:`kseg.prediction.check_outputs`: never over a file kseg did not write, each
file written under a temporary name and renamed into place):

- ``<name>_instances.png``: the photo with the instances scoring at least ``score_threshold`` drawn on it
  (:func:`kseg.detection.draw.draw_instances`: tinted masks, boxes, ``name score`` labels);
- ``<name>_instances.json``: ``{"software": "kseg.predict", "image", "width", "height", "model",
  "score_threshold", "instances": [{"id", "class", "name", "score", "box", "area"}, ...]}`` (best first;
  ``id`` is the instance's value in the id map, ``box`` xyxy pixels, ``area`` its mask's pixels);
- ``<name>_ids.png``: a uint16 PNG, 0 = no instance, ``id`` = that instance
  (:func:`kseg.detection.draw.instance_id_map`).
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from kseg.errors import KsegError, write_text_atomic

INSTANCE_MODELS = ("MaskRCNN", "PanopticFPN")  # the kseg classes a .keras file may hold to be an instance model
SUFFIXES = ("_instances.png", "_instances.json", "_ids.png")
SEMANTIC_ONLY = ("--runtime", "--size", "--scales", "--flip", "--merge", "--output-stride", "--postprocess",
                 "--attention-maps", "--palette", "--threshold")


def keras_class_name(path) -> str | None:
    """The class name in a ``.keras`` file's config (``MaskRCNN``, ``Functional``, ...), None if unreadable."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json")).get("class_name")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def run_class_names(info: dict, num_classes: int) -> list[str] | None:
    """The class names of a run's ``run.json`` ``info`` (background first), None when it has none that fit."""
    names = info.get("class_names")
    if not names:
        return None
    names = [str(n) for n in names]
    if len(names) == num_classes - 1:
        names = ["background", *names]
    if len(names) != num_classes:
        print(f"kseg: {info['_path']}: {len(names)} class names for a model of {num_classes} classes; "
              f"naming them class 0..{num_classes - 1}", file=sys.stderr)
        return None
    print(f"kseg: from {info['_path']}: {num_classes} classes ({', '.join(names[:5])}"
          f"{', ...' if num_classes > 5 else ''})", file=sys.stderr)
    return names


def is_instance_model(spec) -> bool:
    """Whether ``spec`` names an instance model (see the module's docstring); nothing is loaded to tell."""
    from kseg.detection.presets import is_preset
    from kseg.detection.serving import INFO_FILE

    path = Path(str(spec))
    if is_preset(str(spec)) and not path.exists():
        return True
    if path.is_dir():
        return (path / INFO_FILE).is_file()
    return path.suffix.lower() == ".keras" and keras_class_name(path) in INSTANCE_MODELS


def load_instance_predictor(spec, min_size: int | None = None, max_size: int | None = None):
    """The predictor (``.predict(rgb) -> Instances``, ``.class_names``) of the instance model ``spec``: a
    preset, a ``.keras`` file or an exported SavedModel (:func:`is_instance_model`)."""
    from kseg.detection.presets import is_preset, load_preset
    from kseg.detection.predictor import InstancePredictor

    path = Path(str(spec))
    if is_preset(str(spec)) and not path.exists():
        model, names, preset = load_preset(str(spec))
        return InstancePredictor(model, names, min_size or preset.min_size, max_size or preset.max_size)
    if path.is_dir():
        from kseg.detection.serving import ExportedInstanceModel

        return ExportedInstanceModel(path)
    from kseg.runinfo import read_run_info
    from kseg.saving import load_keras_model

    model = load_keras_model(path)
    info = read_run_info(path) or {}
    return InstancePredictor(model, run_class_names(info, model.num_classes), min_size or info.get("min_size", 800),
                             max_size or info.get("max_size", 1333))


def check_instance_options(model, given: list[str], score_threshold: float) -> None:
    """Refuse, in one line, semantic-model options given for an instance ``model`` and a bad threshold."""
    if given:
        raise KsegError(f"{model}: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to semantic models; "
                        f"this is an instance model (use --score-threshold)")
    if not 0.0 <= score_threshold <= 1.0:
        raise KsegError(f"bad --score-threshold {score_threshold}: give a score between 0 and 1, e.g. 0.5")


def instances_json(instances, image_path, shape, model, score_threshold: float) -> dict:
    """What ``<name>_instances.json`` holds for ``instances`` (already cut at ``score_threshold``)."""
    items = [{"id": i + 1, **item} for i, item in enumerate(instances.to_json())]
    return {"software": "kseg.predict", "image": str(image_path), "width": int(shape[1]), "height": int(shape[0]),
            "model": str(model), "score_threshold": score_threshold, "instances": items}


def write_instance_outputs(image, instances, files, image_path, model, score_threshold: float,
                           alpha: float = 0.5) -> None:
    """Write the overlay (masks at ``alpha``), the JSON and the id map of one image's ``instances`` (cut at
    ``score_threshold``)."""
    from PIL import Image

    from kseg.detection.draw import draw_instances, instance_id_map
    from kseg.prediction import save_png

    save_png(files[0], Image.fromarray(draw_instances(image, instances, alpha=alpha)))
    doc = instances_json(instances, image_path, image.shape, model, score_threshold)
    write_text_atomic(files[1], json.dumps(doc, indent=1) + "\n", "instances")
    save_png(files[2], Image.fromarray(instance_id_map(instances, image.shape)))


def plan_instance_outputs(paths, out_dir) -> list[tuple[Path, ...]]:
    """The three output paths of each input, checked (:func:`kseg.prediction.check_outputs`), ``out_dir`` made."""
    from kseg.prediction import plan_outputs

    return plan_outputs(paths, out_dir, SUFFIXES)


def predict_instance_files(predictor, paths, out_dir, model="model", score_threshold: float = 0.5,
                           alpha: float = 0.5, progress: bool = False, skipped: list | None = None) -> list[dict]:
    """Predict every image of ``paths`` with ``predictor`` and write its three outputs into ``out_dir``.

    Returns one dict per image: ``image``, ``instances`` (how many at or above ``score_threshold``),
    ``overlay``, ``json``, ``ids``. Unreadable images are skipped (and listed in ``skipped``) when
    ``skipped`` is a list, else raise :class:`KsegError`."""
    from kseg.prediction import _Progress, _read_or_skip

    paths = [Path(p) for p in paths]
    planned = plan_instance_outputs(paths, out_dir)
    bar = _Progress(len(paths), enabled=progress)
    results = []
    for i, (path, files) in enumerate(zip(paths, planned)):
        image = _read_or_skip(path, skipped, progress)
        if image is None:
            continue
        instances = predictor.predict(image).above(score_threshold)
        write_instance_outputs(image, instances, files, path, model, score_threshold, alpha)
        results.append({"image": str(path), "instances": len(instances.scores), "overlay": str(files[0]),
                        "json": str(files[1]), "ids": str(files[2])})
        bar.update(i + 1, path.name)
    bar.close()
    return results


def given_semantic_options(args) -> list[str]:
    """The semantic-model options of ``kseg predict``'s parsed ``args`` that were given."""
    values = {"--runtime": args.runtime, "--postprocess": args.postprocess, "--attention-maps": args.attention_maps,
              "--palette": args.palette, "--threshold": args.threshold}
    return [f for f in SEMANTIC_ONLY if f in args.tta or values.get(f) not in (None, False)]


def predict_instances_command(args, paths) -> int | None:
    """``kseg predict`` when ``args.model`` is an instance model: write the outputs and say so; None otherwise."""
    import time

    if not is_instance_model(args.model):
        return None
    threshold = 0.5 if args.score_threshold is None else args.score_threshold
    check_instance_options(args.model, given_semantic_options(args), threshold)
    if Path(str(args.model)).suffix.lower() == ".keras" and keras_class_name(args.model) == "PanopticFPN":
        from kseg.detection.panoptic_command import predict_panoptic_command

        return predict_panoptic_command(args, paths, threshold)
    predictor = load_instance_predictor(args.model)
    t0, skipped = time.time(), []
    results = predict_instance_files(predictor, paths, args.out, args.model, threshold, args.alpha,
                                     progress=not args.quiet and sys.stderr.isatty(), skipped=skipped)
    if not results:
        raise KsegError(f"{paths[0]}: none of the {len(paths)} input images could be read")
    n = sum(r["instances"] for r in results)
    note = f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""
    print(f"kseg: wrote {n} instances (score >= {threshold:g}) of {len(results)} image(s) to {args.out} "
          f"(_instances.png, _instances.json, _ids.png) in {time.time() - t0:.1f}s{note}")
    return 0
