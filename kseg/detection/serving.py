"""Serving an instance model: a SavedModel that takes one uint8 RGB photo of any size.

:func:`export_instances` writes a SavedModel whose ``serving_default`` signature takes ``image``,
uint8 ``[H, W, 3]`` of any H and W, and returns the detections kept by the model, best first:

- ``boxes``: float32 ``[N, 4]``, ``(x1, y1, x2, y2)`` in pixels of the photo;
- ``classes``: int32 ``[N]`` (the model's class indices, 0 = background never occurs);
- ``scores``: float32 ``[N]``;
- ``masks``: float32 ``[N, H, W]`` probabilities at the photo's size (a pixel belongs at >= 0.5).

The signature is :func:`kseg.detection.predictor.photo_instances`, the graph that
:class:`~kseg.detection.predictor.InstancePredictor` runs: the photo is resized (short side
``min_size``, long side at most ``max_size``) and padded inside, the boxes are scaled back and the
masks pasted, so the SavedModel's detections are the predictor's. Beside ``saved_model.pb`` the folder
holds ``kseg_instances.json`` (class names, sizes), which TensorFlow ignores and
:class:`ExportedInstanceModel` reads: ``kseg.load_model``, ``kseg predict`` and ``kseg evaluate`` take
the folder. No scores are cut: ``scores >= 0.5`` is what ``kseg predict`` draws.

Serving in Python::

    serve = tf.saved_model.load(DIR).signatures["serving_default"]
    out = serve(image=tf.constant(photo_uint8))   # {"boxes", "classes", "scores", "masks"}
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

INFO_FILE = "kseg_instances.json"
OUTPUTS = ("boxes", "classes", "scores", "masks")


def export_instances(model, out, class_names=None, min_size: int = 800, max_size: int = 1333,
                     verbose: bool = False) -> Path:
    """Write ``model`` (a :class:`~kseg.detection.maskrcnn.MaskRCNN`) as a SavedModel folder ``out`` (see the
    module's docstring). Written beside ``out`` and renamed into place; an existing ``out`` is replaced only
    when it is such an export."""
    import keras
    import tensorflow as tf

    from kseg.detection.predictor import photo_instances
    from kseg.serving import move_into_place, staging_dir

    out = Path(out)
    if out.exists() and not (out / INFO_FILE).is_file():
        raise KsegError(f"{out} exists and is not an instance SavedModel kseg wrote: it is left alone; "
                        f"choose another --out")
    names = list(class_names) if class_names else [f"class {i}" for i in range(model.num_classes)]
    tmp = staging_dir(out)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)

        def serve(image):
            found = photo_instances(model, image, min_size, max_size)
            return {k: found[k] for k in OUTPUTS}

        archive.add_endpoint("serving_default", serve,
                             input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
        sm = tmp / "saved_model"
        archive.write_out(str(sm), verbose=verbose)
        info = {"software": "kseg.export", "model": type(model).__name__, "num_classes": int(model.num_classes),
                "class_names": names, "min_size": min_size, "max_size": max_size}
        (sm / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        move_into_place(sm, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class ExportedInstanceModel:
    """A SavedModel folder written by :func:`export_instances`: ``predict(rgb) -> Instances``, as
    :class:`~kseg.detection.predictor.InstancePredictor`; ``class_names``, ``num_classes``, ``signature``."""

    def __init__(self, path):
        from kseg.saving import load_serving_default

        self.path = Path(path)
        try:
            info = json.loads((self.path / INFO_FILE).read_text())
            self.class_names = [str(n) for n in info["class_names"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise KsegError(f"{self.path / INFO_FILE}: cannot read the export's class names ({err})") from None
        self.num_classes = len(self.class_names)
        self._loaded, self.signature = load_serving_default(self.path)
        outputs = self.signature.structured_outputs
        if not isinstance(outputs, dict) or set(OUTPUTS) - set(outputs):
            raise KsegError(f"{self.path}: its serving_default does not return {', '.join(OUTPUTS)}")

    def predict(self, image):
        """The :class:`~kseg.detection.predictor.Instances` of one RGB image [H, W, 3] (uint8, or 0..255 floats,
        rounded)."""
        import tensorflow as tf

        from kseg.detection.predictor import Instances

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise KsegError(f"{self.path}: takes one RGB image [H, W, 3]; got an array of shape {image.shape}")
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        out = {k: np.asarray(v) for k, v in self.signature(image=tf.constant(image)).items()}
        return Instances(out["boxes"], out["scores"], out["classes"], out["masks"],
                         [self.class_names[c] for c in out["classes"]])

    def __repr__(self) -> str:
        return f"ExportedInstanceModel({str(self.path)!r}, {self.num_classes} classes)"


def export_instance_command(args) -> int | None:
    """``kseg export`` when ``args.model`` is an instance model (:func:`kseg.detection.prediction.is_instance_model`):
    write the SavedModel and say so; None otherwise."""
    import time

    from kseg.detection.prediction import is_instance_model, load_instance_predictor

    if not is_instance_model(args.model):
        return None
    if Path(args.model).is_dir():
        raise KsegError(f"{args.model}: already an exported SavedModel; give the .keras file or the preset")
    from kseg.detection.prediction import keras_class_name

    if Path(args.model).suffix.lower() == ".keras" and keras_class_name(args.model) == "PanopticFPN":
        raise KsegError(f"{args.model}: kseg export does not write Panoptic FPN models yet (only Mask R-CNN); "
                        "use the .keras file with kseg predict")
    if args.format != "saved_model" or args.int8:
        raise KsegError(f"{args.model}: an instance model exports as --format saved_model only (not {args.format}"
                        f"{' --int8' if args.int8 else ''})")
    predictor = load_instance_predictor(args.model)
    t0 = time.time()
    out = export_instances(predictor.model, args.out, predictor.class_names, predictor.min_size, predictor.max_size)
    print(f"kseg: wrote SavedModel {out} (one uint8 image in; boxes, classes, scores, masks out; no "
          f"model.tflite for an instance model) in {time.time() - t0:.1f}s")
    return 0
