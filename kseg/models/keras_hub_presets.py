"""keras-hub's pretrained segmenters as kseg models (``kseg predict --model deeplabv3plus-resnet50-voc photo.jpg``).

keras-hub publishes DeepLabV3+ on ResNet-50 trained on Pascal VOC 2012 with the SBD extra masks (its preset
``deeplab_v3_plus_resnet50_pascalvoc``, on Kaggle). kseg does not re-implement it: keras-hub, an optional
dependency (``pip install 'kseg[hub]'``), builds the network and loads its weights with its own
``ImageSegmenter.from_preset``: downloaded once by kagglehub (into ``$KAGGLEHUB_CACHE``, by default
``~/.cache/kagglehub``), or read offline from a preset folder (``$KSEG_WEIGHTS_DIR/<preset>/``, or any
folder keras-hub's ``save_to_preset`` wrote, passed as ``$KSEG_KERAS_HUB_PRESET``).

:func:`wrap_segmenter` turns the preset into a kseg model: raw RGB in [0, 255] of any size (multiples of
32) -> the preset's own image converter's ``scale`` and ``offset`` (its fixed resize is left to kseg's
predictor, which keeps the photo's aspect) -> keras-hub's backbone and output convolution -> softmax
probabilities in float32. Called without ``training`` (``model(x)``), the backbone runs in inference mode, as
keras-hub's ``predict`` runs it; only ``training=True`` uses and moves its batch-norm statistics. The result saves as ``.keras`` (loading it needs keras-hub installed), exports and
takes TTA like any kseg model (the export copy swaps Keras's bilinear ``UpSampling2D``, which cannot trace at a
size known only at run time, for kseg's equal :class:`~kseg.models.resampling.BilinearUpSampling2D`).
"""

from __future__ import annotations

import os
from pathlib import Path

from kseg.errors import KsegError

INSTALL = "pip install 'kseg[hub]'"


def import_keras_hub(what: str):
    """keras-hub, or a one-line :class:`KsegError` saying how to install it."""
    try:
        import keras_hub
    except ImportError:
        raise KsegError(f"{what} needs keras-hub, which is not installed: {INSTALL} (keras-hub and "
                        "tensorflow-text, about 270 MB)") from None
    return keras_hub


def preset_variant(handle: str) -> str:
    """The variant of a Kaggle handle (``kaggle://owner/model/keras/variant[/version]``)."""
    parts = handle.rstrip("/").split("/")
    return parts[-2] if parts[-1].isdigit() else parts[-1]


def preset_source(handle: str) -> str:
    """Where keras-hub reads the preset ``handle`` (``kaggle://owner/model/keras/variant/version``) from:
    ``$KSEG_KERAS_HUB_PRESET``, else ``$KSEG_WEIGHTS_DIR/<variant>/`` when that folder exists, else the handle
    (downloaded once by kagglehub)."""
    given = os.environ.get("KSEG_KERAS_HUB_PRESET")
    if given:
        if not Path(given).is_dir():
            raise KsegError(f"$KSEG_KERAS_HUB_PRESET={given}: no such preset folder")
        return given
    folder = os.environ.get("KSEG_WEIGHTS_DIR")
    local = Path(folder) / preset_variant(handle) if folder else None
    return str(local) if local is not None and local.is_dir() else handle


def load_segmenter(name: str, handle: str):
    """keras-hub's ``ImageSegmenter`` of preset ``handle``, or a one-line :class:`KsegError`."""
    keras_hub = import_keras_hub(name)
    source = preset_source(handle)
    try:
        return keras_hub.models.ImageSegmenter.from_preset(source)
    except Exception as err:  # keras-hub and kagglehub raise many types for a missing or broken preset
        line = " ".join(str(err).split())[:300]
        raise KsegError(f"{source}: could not load keras-hub's {name} ({type(err).__name__}: {line})") from None


def converter_of(segmenter):
    """The preset's image converter (``scale``, ``offset``, ``image_size``), or None."""
    pre = getattr(segmenter, "preprocessor", None)
    return getattr(pre, "image_converter", None) if pre is not None else None


def wrap_segmenter(segmenter, name: str, num_classes: int):
    """A kseg model over keras-hub ``segmenter``: RGB [0, 255] in, softmax probabilities (float32) out."""
    import keras
    import numpy as np

    if int(segmenter.num_classes) != num_classes:
        raise KsegError(f"{name}: the preset has {segmenter.num_classes} classes, not the {num_classes} kseg "
                        "names for it")
    if segmenter.activation not in (None, "linear", "softmax"):
        raise KsegError(f"{name}: the preset's output activation {segmenter.activation!r} is not softmax or logits")
    conv = converter_of(segmenter)
    scale = np.broadcast_to(np.asarray(1.0 if conv is None or conv.scale is None else conv.scale, "float64"), (3,))
    offset = np.broadcast_to(np.asarray(0.0 if conv is None or conv.offset is None else conv.offset, "float64"), (3,))
    if np.any(scale == 0):
        raise KsegError(f"{name}: the preset's image converter scales a channel by 0")
    inputs = keras.Input((None, None, 3), name="image")
    # x * scale + offset == (x - mean) / sqrt(variance) with mean = -offset / scale, variance = 1 / scale**2
    x = keras.layers.Normalization(mean=(-offset / scale).tolist(), variance=(1.0 / scale ** 2).tolist(),
                                   name="keras_hub_scale_offset")(inputs)
    # training=False unless the caller says True: keras-hub's SpatialPyramidPooling takes no `training`, so a
    # bare model(x) would otherwise run its batch norms in training mode and move their statistics
    x = segmenter.output_conv(segmenter.backbone(x, training=False))
    activation = "linear" if segmenter.activation == "softmax" else "softmax"
    outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))


def short_side_of(segmenter, default: int) -> int:
    """The short side photos are resized to: the preset converter's ``image_size`` (its smaller side), else
    ``default``."""
    conv = converter_of(segmenter)
    size = getattr(conv, "image_size", None) if conv is not None else None
    return int(min(size)) if size else default
