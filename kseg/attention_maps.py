"""A multi-scale model's attention maps as pictures: ``kseg predict --attention-maps``.

For each image, one greyscale PNG per inference scale, ``<name>_attention_<scale>.png`` beside the class
map: the weight (0 black .. 1 white) that scale's prediction has at each pixel in the merged one (the weights
sum to 1 at each pixel; see :func:`kseg.models.multiscale.attention_maps`). They are computed as the
prediction is: the image resized to the predictor's base size, the weights resized back to the image's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.errors import KsegError

SUFFIX = "_attention_"


def check_model(model, model_path) -> None:
    """A one-line :class:`KsegError` unless ``model`` (None for a SavedModel) is a multi-scale model at two or
    more scales."""
    from kseg.models.multiscale import TRUNK, is_multiscale

    if model is None:
        raise KsegError(f"{model_path}: --attention-maps needs a .keras model, not a SavedModel")
    if not is_multiscale(model):
        if any(la.name == TRUNK for la in model.layers):
            raise KsegError("--attention-maps needs two or more --scales: at one scale nothing is merged")
        raise KsegError(f"{model_path}: --attention-maps is for a multi-scale model (kseg train --multiscale); "
                        f"this one predicts at one scale")


def attention_paths(results) -> list[tuple[str, list[Path]]]:
    """``(image, [map path per scale])`` for each of ``predict_files``' ``results``."""
    return [(r["image"], [Path(r["class_map"]).with_name(f"{Path(r['class_map']).stem}{SUFFIX}{s:g}.png")
                          for s in r["scales"]]) for r in results]


def write_attention_maps(predictor, results) -> list[Path]:
    """Write each image's attention maps beside its class map (``results``: what
    :func:`kseg.prediction.predict_files` returned for ``predictor``, a :class:`kseg.inference.Predictor` of a
    multi-scale model); an existing file kseg.predict did not write is refused first. Returns the paths."""
    import tensorflow as tf
    from PIL import Image

    from kseg.inference import flexible, read_image
    from kseg.models.multiscale import attention_maps, info
    from kseg.prediction import check_outputs, save_png

    check_model(predictor.model, "--model")
    scales = info(predictor.model)["scales"]
    planned = attention_paths([{**r, "scales": scales} for r in results])
    check_outputs([image for image, _ in planned], [p for _, paths in planned for p in paths])
    net = attention_maps(flexible(predictor.model))
    written = []
    for image_path, paths in planned:
        image = read_image(image_path)
        h, w = image.shape[:2]
        x = tf.image.resize(tf.cast(image[None], tf.float32), predictor.base_size(h, w), method="bilinear")
        weights = tf.image.resize(net(x, training=False), (h, w), method="bilinear").numpy()[0]
        for i, path in enumerate(paths):
            save_png(path, Image.fromarray(np.clip(np.rint(weights[..., i] * 255), 0, 255).astype(np.uint8)))
            written.append(path)
    return written
