"""Run an instance-segmentation model on photos of any size, as torchvision's ``GeneralizedRCNNTransform`` does.

:class:`InstancePredictor` resizes each image (bilinear, no antialiasing) so its short side is
``min_size`` unless its long side would pass ``max_size`` (torchvision: 800 and 1333), pads it at the
bottom and right to multiples of 32 with the ImageNet mean colour (torchvision pads the normalised
image with zeros: the same pixels), runs the model, scales the boxes back to the photo
(``x * w / w_resized``, ``y * h / h_resized``) and pastes each 28x28 mask into the photo
(:func:`kseg.detection.masks.paste_masks`). ``predict(image)`` returns an :class:`Instances`.
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

    h, w = resized_size(image.shape[0], image.shape[1], min_size, max_size)
    resized = tf.image.resize(np.asarray(image, np.float32)[None], (h, w), method="bilinear", antialias=False)
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    batch = np.empty((1, ph, pw, 3), np.float32)
    batch[...] = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
    batch[0, :h, :w] = resized.numpy()[0]
    return batch, (h, w)


class InstancePredictor:
    """``InstancePredictor(model, class_names).predict(rgb_image)`` -> :class:`Instances` at the photo's size."""

    def __init__(self, model, class_names=None, min_size: int = 800, max_size: int = 1333):
        import tensorflow as tf

        self.model = model
        self.class_names = list(class_names) if class_names else [f"class {i}" for i in range(model.num_classes)]
        self.min_size, self.max_size = min_size, max_size
        self._run = tf.function(lambda x, s: model({"image": x, "image_size": s}), reduce_retracing=True)

    def predict(self, image: np.ndarray) -> Instances:
        from kseg.detection.masks import paste_masks

        batch, (h, w) = prepare(image, self.min_size, self.max_size)
        out = {k: np.asarray(v[0]) for k, v in self._run(batch, np.array([[h, w]], np.int32)).items()}
        keep = out["valid"]
        ratio = np.array([image.shape[1] / w, image.shape[0] / h] * 2, np.float32)
        boxes = out["boxes"][keep] * ratio
        masks = np.asarray(paste_masks(out["masks"][keep], boxes, image.shape[0], image.shape[1]))
        classes = out["classes"][keep]
        return Instances(boxes, out["scores"][keep], classes, masks, [self.class_names[c] for c in classes])
