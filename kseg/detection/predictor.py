"""Run an instance-segmentation model on photos of any size, as torchvision's ``GeneralizedRCNNTransform`` does.

:class:`InstancePredictor` resizes each image (bilinear, no antialiasing) so its short side is
``min_size`` unless its long side would pass ``max_size`` (torchvision: 800 and 1333), pads it at the
bottom and right to multiples of 32 with the ImageNet mean colour (torchvision pads the normalised
image with zeros: the same pixels), runs the model, scales the boxes back to the photo
(``x * w / w_resized``, ``y * h / h_resized``) and pastes each 28x28 mask into the photo
(:func:`kseg.detection.masks.paste_masks`). ``predict(image)`` returns an :class:`Instances`.
All of it is one graph, :func:`photo_instances`, which ``kseg export`` serves as it is, so a
SavedModel gives the predictor's detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kseg.detection.resnet_fpn import IMAGENET_MEAN


@dataclass
class Instances:
    """Detections in one photo, best score first: ``boxes`` [N, 4] xyxy pixels, ``scores`` [N], ``classes`` [N]
    (model class indices, 0 = background), ``masks`` [N, H, W] probabilities, ``names`` the classes' names."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    names: list

    def above(self, score: float) -> "Instances":
        keep = self.scores >= score
        return Instances(self.boxes[keep], self.scores[keep], self.classes[keep], self.masks[keep],
                         [n for n, k in zip(self.names, keep) if k])

    def to_json(self) -> list[dict]:
        """One dict per instance: class index and name, score, box (xyxy), mask area (pixels with p >= 0.5)."""
        return [{"class": int(c), "name": n, "score": round(float(s), 4), "box": [round(float(v), 2) for v in b],
                 "area": int((m >= 0.5).sum())}
                for b, s, c, m, n in zip(self.boxes, self.scores, self.classes, self.masks, self.names)]


def resized_size(height: int, width: int, min_size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """torchvision's resize: scale = min(min_size / short side, max_size / long side), sizes floored."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return int(np.floor(height * scale)), int(np.floor(width * scale))


def prepare(image: np.ndarray, min_size: int = 800, max_size: int = 1333) -> tuple[np.ndarray, tuple[int, int]]:
    """``(padded batch [1, H32, W32, 3] float32, resized (h, w))`` for one RGB ``image`` [H, W, 3]."""
    import tensorflow as tf

    batch, size = _resize_and_pad(tf.convert_to_tensor(np.asarray(image, np.float32)), min_size, max_size)
    return batch.numpy(), tuple(int(v) for v in size.numpy())


def _resize_and_pad(image, min_size: int, max_size: int):
    """Graph ops of :func:`prepare`: ``(batch [1, H32, W32, 3], resized (h, w) int32)`` of a float32 [H, W, 3]."""
    import tensorflow as tf

    hf, wf = tf.cast(tf.shape(image)[0], tf.float64), tf.cast(tf.shape(image)[1], tf.float64)
    scale = tf.minimum(min_size / tf.minimum(hf, wf), max_size / tf.maximum(hf, wf))
    h, w = tf.cast(tf.floor(hf * scale), tf.int32), tf.cast(tf.floor(wf * scale), tf.int32)
    resized = tf.image.resize(image[None], tf.stack([h, w]), method="bilinear", antialias=False)[0]
    ph, pw = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    padded = tf.pad(resized, [[0, ph - h], [0, pw - w], [0, 0]])
    inside = (tf.range(ph)[:, None] < h) & (tf.range(pw)[None, :] < w)
    mean = tf.constant(np.asarray(IMAGENET_MEAN, np.float32) * 255.0)
    return tf.where(inside[..., None], padded, mean)[None], tf.stack([h, w])


def photo_instances(model, image, min_size: int = 800, max_size: int = 1333) -> dict:
    """The whole photo pipeline in graph ops (what :class:`InstancePredictor` and the SavedModel export run).

    ``image`` is one RGB image [H, W, 3] of any size and dtype (values 0..255); returns the kept detections,
    best first: ``boxes`` [N, 4] float32 photo pixels, ``scores`` [N], ``classes`` [N] int32 and ``masks``
    [N, H, W] float32 probabilities pasted into the photo."""
    import tensorflow as tf

    from kseg.detection.masks import paste_masks

    image = tf.cast(image, tf.float32)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    batch, size = _resize_and_pad(image, min_size, max_size)
    out = model({"image": batch, "image_size": size[None]})
    keep = out["valid"][0]
    ry = tf.cast(tf.cast(height, tf.float64) / tf.cast(size[0], tf.float64), tf.float32)
    rx = tf.cast(tf.cast(width, tf.float64) / tf.cast(size[1], tf.float64), tf.float32)
    boxes = tf.boolean_mask(out["boxes"][0], keep) * tf.stack([rx, ry, rx, ry])
    masks = paste_masks(tf.boolean_mask(out["masks"][0], keep), boxes, height, width)
    return {"boxes": boxes, "scores": tf.boolean_mask(out["scores"][0], keep),
            "classes": tf.cast(tf.boolean_mask(out["classes"][0], keep), tf.int32), "masks": masks}


class InstancePredictor:
    """``InstancePredictor(model, class_names).predict(rgb_image)`` -> :class:`Instances` at the photo's size."""

    def __init__(self, model, class_names=None, min_size: int = 800, max_size: int = 1333):
        import tensorflow as tf

        self.model = model
        self.class_names = list(class_names) if class_names else [f"class {i}" for i in range(model.num_classes)]
        self.min_size, self.max_size = min_size, max_size
        self._run = tf.function(lambda x: photo_instances(model, x, min_size, max_size),
                                input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])

    def predict(self, image: np.ndarray) -> Instances:
        out = {k: np.asarray(v) for k, v in self._run(np.asarray(image, np.float32)).items()}
        return Instances(out["boxes"], out["scores"], out["classes"], out["masks"],
                         [self.class_names[c] for c in out["classes"]])
