"""int8 post-training quantization of an exported model, calibrated on training images.

``kseg export --format openvino --int8 --calibration IMAGES...`` quantizes the OpenVINO IR with NNCF
(``nncf.quantize``: int8 weights and activations in the convolutions, the rest float32);
``--format litert --int8`` converts with TFLite's full-integer quantization (``Optimize.DEFAULT`` and a
representative dataset: int8 kernels wherever TFLite has them, float32 elsewhere; the model still takes
uint8 images and returns float32 probabilities). Both calibrate on the images
:func:`calibration_images` reads, at their own sizes, as the exported model takes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.errors import KsegError

CALIBRATION_COUNT = 100


def calibration_images(sources, count: int = CALIBRATION_COUNT, seed: int = 0) -> list[np.ndarray]:
    """Up to ``count`` images from ``sources`` (image files, folders of images, or a dataset folder holding
    ``images/``, e.g. iccv09Data), as uint8 (1, H, W, 3) batches; a random ``count`` when there are more."""
    from kseg.inference import read_image
    from kseg.prediction import list_images

    if count < 1:
        raise KsegError(f"bad --calibration-count {count}: give a positive number of images, e.g. 100")
    items = []
    for src in [sources] if isinstance(sources, (str, Path)) else sources:
        src = Path(src)
        items.append(src / "images" if src.is_dir() and (src / "images").is_dir() else src)
    paths = list_images(items, quiet=True)
    if len(paths) > count:
        order = np.random.default_rng(seed).permutation(len(paths))[:count]
        paths = [paths[i] for i in sorted(order)]
    return [read_image(p)[None] for p in paths]


def quantize_openvino(src, dst, images) -> Path:
    """Quantize the OpenVINO IR ``src`` to int8 with NNCF on ``images``; write it at ``dst`` (+ ``.bin``)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(src))
    try:
        quantized = nncf.quantize(model, nncf.Dataset(list(images)), subset_size=len(images))
    except Exception as err:  # NNCF raises many types
        raise KsegError(f"{src.name}: NNCF int8 quantization failed ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:300]})") from None
    ov.save_model(quantized, str(dst), compress_to_fp16=False)
    return Path(dst)


def litert_int8_options(images) -> dict:
    """The ``tf.lite.TFLiteConverter`` settings of full-integer quantization calibrated on ``images``
    (for Keras's ``model.export(format="litert", **options)``)."""
    import tensorflow as tf

    images = list(images)

    def representative():
        for x in images:
            yield [x]

    return {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative}
