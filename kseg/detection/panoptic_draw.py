"""A picture of a panoptic result: stuff in its class colour, each thing in a shade of its class colour.

:func:`draw_panoptic` blends the colours over a copy of the photo, outlines each thing, writes
``name`` (and ``score`` when the segment has one) on each thing, and adds a legend strip below the
photo with a swatch and the name of every class present (things before stuff, by category id).
Void pixels (id 0) stay as they are. It draws a prediction and a ground-truth panoptic PNG alike.
Shades are Detectron2's ``Visualizer._jitter``: the class colour plus a random vector of length 0.5 (in
0..1 units), seeded by the segment's position, so the same result always gets the same picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from kseg.errors import KsegError


def category_colors(categories) -> dict:
    """``{category id: RGB}``: each category's ``color`` where it has one, else kseg's seeded palette."""
    from kseg import viz

    cats = list(categories)
    fallback = viz.palette(len(cats))
    return {c["id"]: tuple(int(v) for v in (c.get("color") or fallback[i])) for i, c in enumerate(cats)}


def _jitter(color, seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).random(3)
    vec = vec / np.linalg.norm(vec) * 0.5
    return np.round(np.clip(vec + np.asarray(color) / 255.0, 0, 1) * 255).astype(np.uint8)


def _scale(shape) -> float:
    return max(0.35, min(shape[:2]) / 700)


def _text(out, text, x, y, color, scale):
    """``text`` on a filled box of ``color`` with its top-left corner near (x, y), inside ``out``."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = int(min(max(x, 0), max(out.shape[1] - tw - 4, 0)))
    y = int(min(max(y, 0), max(out.shape[0] - th - base - 2, 0)))
    cv2.rectangle(out, (x, y), (x + tw + 4, y + th + base + 2), tuple(int(v) for v in color), -1)
    dark = np.asarray(color, np.float32) @ np.array([0.299, 0.587, 0.114]) > 150
    cv2.putText(out, text, (x + 2, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0) if dark else (255, 255, 255), 1, cv2.LINE_AA)


def legend_strip(width: int, entries, scale: float) -> np.ndarray:
    """A white strip ``width`` wide with a swatch and a name per ``(name, colour)``, wrapped into rows."""
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    line, sw, pad = th + base + 8, th + base, 6
    rows, x = [[]], pad
    for name, color in entries:
        w = sw + 4 + cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] + 2 * pad
        if x + w > width and rows[-1]:
            rows.append([])
            x = pad
        rows[-1].append((x, name, color))
        x += w
    strip = np.full((line * len(rows) + 4, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = 4 + r * line
        for x, name, color in row:
            cv2.rectangle(strip, (x, y), (x + sw, y + sw), tuple(int(v) for v in color), -1)
            cv2.rectangle(strip, (x, y), (x + sw, y + sw), (60, 60, 60), 1)
            cv2.putText(strip, name, (x + sw + 4, y + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def draw_panoptic(image, id_map, segments_info, categories, alpha: float = 0.55, labels: bool = True) -> np.ndarray:
    """The photo with the panoptic result drawn on it, and the legend strip below (RGB uint8).

    Args:
        image: RGB ``[H, W, 3]``. id_map: ``[H, W]`` segment ids (0 = void).
        segments_info: dicts with ``id`` and ``category_id`` (and optionally ``score``).
        categories: COCO panoptic categories (``id``, ``name``, ``isthing``, optionally ``color``).
        labels: write each thing's name (and score) on it.
    """
    out = np.array(image, np.uint8, copy=True)
    ids = np.asarray(id_map)
    if out.ndim != 3 or ids.shape != out.shape[:2]:
        raise KsegError(f"draw_panoptic: image {out.shape} and id map {ids.shape} differ in size")
    cats = {c["id"]: c for c in categories}
    colors = category_colors(categories)
    unknown = sorted({s["category_id"] for s in segments_info} - set(cats))
    if unknown:
        raise KsegError(f"draw_panoptic: category id(s) {unknown} are not among the categories")
    scale = _scale(out.shape)
    things, present = [], set()
    for k, seg in enumerate(segments_info):
        mask = ids == seg["id"]
        if not mask.any():
            continue
        cat = cats[seg["category_id"]]
        present.add(cat["id"])
        color = _jitter(colors[cat["id"]], k) if cat.get("isthing") else np.asarray(colors[cat["id"]], np.uint8)
        out[mask] = (out[mask] * (1 - alpha) + color.astype(np.float32) * alpha).astype(np.uint8)
        if cat.get("isthing"):
            things.append((mask, color, cat["name"], seg.get("score")))
    for mask, color, name, score in things:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (color * 0.6).astype(int).tolist(), 1)
    if labels:
        for mask, color, name, score in things:
            ys, xs = np.nonzero(mask)
            _text(out, name if score is None else f"{name} {score:.2f}", xs.min(), ys.min(), color, scale)
    order = sorted(present, key=lambda i: (not cats[i].get("isthing"), i))
    legend = legend_strip(out.shape[1], [(cats[i]["name"], colors[i]) for i in order], scale)
    return np.concatenate([out, legend], axis=0)
