"""Pictures of instances: each mask tinted in its own colour, its box outlined, ``name score`` on a label.

:func:`draw_instances` draws on a copy of an RGB uint8 image, lowest score first so the best
detection stays on top; masks are drawn where the probability is >= ``threshold``.
:func:`instance_id_map` is the machine-readable twin: a uint16 map, 0 = no instance, ``i + 1`` = the
``i``-th instance (best score first), each pixel given to the best-scoring instance covering it.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def instance_colors(n: int) -> np.ndarray:
    """``n`` distinct saturated RGB colours (golden-ratio hues)."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 0.95)] for h in hues], np.uint8)


def draw_instances(image: np.ndarray, instances, alpha: float = 0.5, threshold: float = 0.5,
                   scores: bool = True) -> np.ndarray:
    """``image`` with ``instances`` (:class:`kseg.detection.predictor.Instances`) drawn on it; labels without
    the score when ``scores`` is False (ground truth)."""
    out = np.array(image, np.uint8, copy=True)
    colors = instance_colors(len(instances.scores))
    scale = max(0.4, min(out.shape[:2]) / 700)
    thick = max(1, round(scale * 2))
    order = np.argsort(instances.scores, kind="stable")
    for i in order:
        mask = instances.masks[i] >= threshold
        color = colors[i].astype(np.float32)
        out[mask] = (out[mask] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colors[i].tolist(), thick)
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in instances.boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colors[i].tolist(), thick)
        text = f"{instances.names[i]} {instances.scores[i]:.2f}" if scores else str(instances.names[i])
        _label(out, text, x1, y1, colors[i], scale)
    return out


def _label(out, text, x, y, color, scale):
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(y, th + base + 2)
    cv2.rectangle(out, (x, y - th - base - 2), (x + tw + 4, y), color.tolist(), -1)
    dark = color.astype(np.float32) @ np.array([0.299, 0.587, 0.114]) > 150
    cv2.putText(out, text, (x + 2, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0) if dark else (255, 255, 255), 1, cv2.LINE_AA)


def instance_id_map(instances, shape, threshold: float = 0.5) -> np.ndarray:
    """uint16 ``shape`` (H, W): 0 = none, ``i + 1`` = instance ``i`` (the best-scoring one where masks overlap)."""
    ids = np.zeros(tuple(shape[:2]), np.uint16)
    for i in np.argsort(instances.scores, kind="stable"):
        ids[instances.masks[i] >= threshold] = i + 1
    return ids
