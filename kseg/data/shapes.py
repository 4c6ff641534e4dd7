"""A synthetic instance and panoptic dataset: coloured shapes on textured sky, ground and water.

Each image is a landscape of stuff regions, a sky above a wavy horizon, ground below it and, in most
images, water (a band at the bottom or a lake in the ground), each with its own texture (a gradient
with soft clouds, grainy blotches, wavy stripes; never a flat colour), and on it up to
``max_objects`` things: circles, squares, triangles, stars and ellipses of random colour (shaded,
with noise), size, rotation and position (they may leave the frame). Things are painted one over the
other; an instance's mask is the part of it that stays visible. They are placed bottom first and
checked top first: a thing with fewer than ``min_area`` visible pixels is dropped, not painted, so
every visible thing is annotated and no pixel is void. With ``crowd`` > 0 an image gets, with that
probability, a crowd: a cluster of small shapes of one class annotated as one ``iscrowd=1`` region,
placed beneath the other things.

:func:`generate_shapes` writes a COCO dataset folder, one sub-folder per split (``train``, ``val``)::

    OUT/train/images/000001.png     RGB images (size x size), image ids 1..N
    OUT/train/instances.json        COCO instances: images, the 5 thing categories (ids 1-5), annotations
                                    with compressed-RLE segmentation, area (visible pixels), bbox (x, y, w, h
                                    of the visible mask, pycocotools' toBbox), iscrowd
    OUT/train/panoptic.json         COCO panoptic: images, annotations (file_name, segments_info: id,
                                    category_id, area, bbox, iscrowd) and all 8 categories (isthing, color)
    OUT/train/panoptic/000001.png   panoptic PNGs, id = R + 256 G + 256^2 B; ids as panopticapi's IdGenerator
                                    makes them: a stuff segment's colour is its category's, a thing's is
                                    its category's colour jittered until unique in the image
    OUT/train/semantic/000001.png   uint8 label maps: the category id of each pixel (things 1-5, stuff 6-8;
                                    0 and 255 (ignore) do not occur)

Categories: circle 1, square 2, triangle 3, star 4, ellipse 5 (things); sky 6, ground 7, water 8 (stuff).
Image ``i`` of a split depends only on ``seed``, the split and ``i`` (not on the number of images), so
the same seed gives the same dataset. The folder is built beside ``out`` and renamed into place; an
existing ``out`` that is not empty is refused.

Command line: ``kseg shapes OUT [--images 200] [--val 50] [--size 256] [--seed 0] [--max-objects 6]
[--min-area 64] [--crowd 0]``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from kseg.detection.panoptic import write_panoptic_png
from kseg.errors import KsegError, cli_entry

THINGS = ((1, "circle", (220, 20, 60)), (2, "square", (30, 60, 230)), (3, "triangle", (250, 170, 30)),
          (4, "star", (0, 190, 90)), (5, "ellipse", (170, 60, 230)))
STUFF = ((6, "sky", (110, 170, 230)), (7, "ground", (150, 110, 60)), (8, "water", (20, 90, 150)))
SPLITS = ("train", "val")


def categories(panoptic: bool = False) -> list[dict]:
    """The COCO categories: the things (instances.json), or things and stuff with isthing and color (panoptic)."""
    out = [{"id": i, "name": n, "supercategory": "shape"} for i, n, _ in THINGS]
    if not panoptic:
        return out
    out = [dict(c, isthing=1, color=list(col)) for c, (*_, col) in zip(out, THINGS)]
    return out + [{"id": i, "name": n, "supercategory": "landscape", "isthing": 0, "color": list(col)}
                  for i, n, col in STUFF]


def _smooth_noise(rng, h: int, w: int, cell: int) -> np.ndarray:
    """Noise in 0..1 that varies over about ``cell`` pixels (a small random grid resized cubically)."""
    import cv2

    grid = rng.random((h // cell + 3, w // cell + 3)).astype(np.float32)
    big = cv2.resize(grid, ((w // cell + 3) * cell, (h // cell + 3) * cell), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[cell:cell + h, cell:cell + w], 0, 1)


def _textures(rng, h: int, w: int) -> dict:
    """One ``HxWx3`` float32 texture per stuff category id."""
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    top, bottom = np.array([60, 110, 200], np.float32), np.array([175, 205, 240], np.float32)
    sky = top + (bottom - top) * yy + rng.normal(0, 10, 3).astype(np.float32)
    clouds = np.clip(_smooth_noise(rng, h, w, 24) * 2.2 - 1.2, 0, 1)[..., None]
    sky = sky * (1 - clouds) + 245 * clouds
    base = np.array([140, 105, 60], np.float32) + rng.normal(0, 15, 3).astype(np.float32)
    grain = rng.standard_normal((h, w, 1), dtype=np.float32)
    ground = base * (0.75 + 0.5 * _smooth_noise(rng, h, w, 8)[..., None]) + 14 * grain
    y, x = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)
    waves = np.sin(2 * np.pi * y / rng.uniform(5, 10) + 0.8 * np.sin(x / rng.uniform(6, 14)) + rng.uniform(0, 6.3))
    water = np.array([25, 90, 155], np.float32) + 28 * waves[..., None] + 6 * grain[::-1]
    return {6: sky, 7: ground, 8: water}


def _stuff_layout(rng, h: int, w: int) -> np.ndarray:
    """``HxW`` stuff category ids: sky over a wavy horizon, ground, and often water (a band or a lake)."""
    x = np.arange(w, dtype=np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    horizon = h * rng.uniform(0.25, 0.55) + h * rng.uniform(0, 0.06) * np.sin(2 * np.pi * x / (w * rng.uniform(
        0.4, 1.5)) + rng.uniform(0, 6.3))
    layout = np.where(y < horizon, 6, 7).astype(np.uint8)
    kind = rng.random()
    if kind < 0.45:  # a band at the bottom
        shore = horizon + (h - horizon) * rng.uniform(0.35, 0.7) + 4 * np.sin(x / rng.uniform(8, 20))
        layout[(y >= shore) & (layout == 7)] = 8
    elif kind < 0.8:  # a lake in the ground
        import cv2

        cy = int(rng.uniform(horizon.max(), h)), int(rng.uniform(0.1, 0.9) * w)
        axes = int(w * rng.uniform(0.15, 0.35)), int(h * rng.uniform(0.06, 0.15))
        lake = cv2.ellipse(np.zeros((h, w), np.uint8), (cy[1], cy[0]), axes, 0, 0, 360, 1, -1).astype(bool)
        layout[lake & (layout == 7)] = 8
    return layout


def _polygon(kind: int, cx: float, cy: float, r: float, angle: float, rng) -> np.ndarray:
    """The outline of a thing of category ``kind`` as ``(n, 2)`` float points (x, y)."""
    if kind in (1, 5):  # circle, ellipse
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        ry = r if kind == 1 else r * rng.uniform(0.4, 0.65)
        pts = np.stack([r * np.cos(t), ry * np.sin(t)], 1)
    elif kind in (2, 3):  # square, triangle
        n = 4 if kind == 2 else 3
        t = np.arange(n) * 2 * np.pi / n
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    else:  # a five-pointed star
        t = np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _fill(h: int, w: int, polygons) -> np.ndarray:
    import cv2

    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32) for p in polygons], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _colour(rng) -> np.ndarray:
    import colorsys

    return 255 * np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1), rng.uniform(0.6, 1)), np.float32)


def _things(rng, size: int, max_objects: int, crowd: float) -> list[dict]:
    """The things of one image, bottom first: ``{"category", "mask", "colour", "crowd"}``."""
    out = []
    if crowd > 0 and rng.random() < crowd:
        kind = int(rng.integers(1, 6))
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        polys = [_polygon(kind, cx + dx, cy + dy, size * rng.uniform(0.025, 0.045), rng.uniform(0, 6.3), rng)
                 for dx, dy in rng.normal(0, 0.07 * size, (int(rng.integers(8, 16)), 2))]
        out.append({"category": kind, "mask": _fill(size, size, polys), "colour": _colour(rng), "crowd": True})
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(1, 6))
        cx, cy = rng.uniform(-0.05, 1.05, 2) * size
        poly = _polygon(kind, cx, cy, size * rng.uniform(0.06, 0.18), rng.uniform(0, 2 * np.pi), rng)
        out.append({"category": kind, "mask": _fill(size, size, [poly]), "colour": _colour(rng), "crowd": False})
    return out


def _visible(things: list[dict], min_area: int) -> list[dict]:
    """The things that stay, bottom first, each with its visible ``mask``; top first, so a dropped thing hides none."""
    covered = np.zeros_like(things[0]["mask"]) if things else None
    kept = []
    for t in reversed(things):
        vis = t["mask"] & ~covered
        if vis.sum() >= min_area:
            kept.append(dict(t, mask=vis))
            covered |= t["mask"]
    return kept[::-1]


def _paint(rng, image: np.ndarray, thing: dict) -> None:
    """Paint a thing's visible pixels: its colour, shaded along a random direction, with noise."""
    ys, xs = np.nonzero(thing["mask"])
    a = rng.uniform(0, 2 * np.pi)
    t = (xs - xs.mean()) * np.cos(a) + (ys - ys.mean()) * np.sin(a)
    shade = 1 + 0.3 * t / max(np.abs(t).max(), 1)
    image[ys, xs] = thing["colour"] * shade[:, None] + rng.normal(0, 7, (len(ys), 1))


def _segment_ids(rng, things: list[dict]) -> list[int]:
    """Panoptic ids as panopticapi's IdGenerator gives them: the category colour, jittered until unused."""
    from kseg.detection.panoptic import rgb2id

    taken = {tuple(c) for *_, c in STUFF} | {(0, 0, 0)}
    colours = dict((i, c) for i, _, c in THINGS)
    ids = []
    for t in things:
        colour = tuple(colours[t["category"]])
        while colour in taken:
            colour = tuple(int(v) for v in np.clip(np.add(colours[t["category"]], rng.integers(-30, 31, 3)), 0, 255))
        taken.add(colour)
        ids.append(int(rgb2id(np.array(colour).reshape(1, 1, 3))[0, 0]))
    return ids


def render(rng, size: int = 256, max_objects: int = 6, min_area: int = 64, crowd: float = 0.0):
    """One image: ``(image HxWx3 uint8, semantic HxW uint8, panoptic ids HxW int32, segments)``.

    ``segments``: ``{"id", "category_id", "iscrowd", "mask"}`` per visible thing (bottom first), then per
    stuff category with visible pixels.
    """
    layout = _stuff_layout(rng, size, size)
    textures = _textures(rng, size, size)
    image = np.where(layout[..., None] == 6, textures[6], np.where(layout[..., None] == 7, textures[7], textures[8]))
    things = _visible(_things(rng, size, max_objects, crowd), min_area)
    semantic = layout.copy()
    ids = np.zeros((size, size), np.int32)
    segments = []
    for t, sid in zip(things, _segment_ids(rng, things)):
        _paint(rng, image, t)
        semantic[t["mask"]] = t["category"]
        ids[t["mask"]] = sid
        segments.append({"id": sid, "category_id": t["category"], "iscrowd": int(t["crowd"]), "mask": t["mask"]})
    for cat, _, colour in STUFF:
        mask = semantic == cat
        if mask.any():
            sid = int(colour[0] + 256 * colour[1] + 65536 * colour[2])
            ids[mask] = sid
            segments.append({"id": sid, "category_id": cat, "iscrowd": 0, "mask": mask})
    return np.clip(image, 0, 255).astype(np.uint8), semantic, ids, segments


def _rle(mask: np.ndarray) -> tuple[dict, list[float]]:
    import pycocotools.mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}, bbox


def _write_split(folder: Path, split: int, n: int, size: int, seed: int, opts: dict) -> None:
    """Write one split's images, label maps and the two JSON files into ``folder``."""
    import cv2

    for sub in ("images", "panoptic", "semantic"):
        (folder / sub).mkdir(parents=True)
    images, anns, pan_anns = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, split, i])
        image, semantic, ids, segments = render(rng, size, **opts)
        name = f"{i + 1:06d}.png"
        cv2.imwrite(str(folder / "images" / name), image[..., ::-1])
        cv2.imwrite(str(folder / "semantic" / name), semantic)
        write_panoptic_png(folder / "panoptic" / name, ids)
        images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
        infos = []
        for s in segments:
            rle, bbox = _rle(s["mask"])
            area = int(s["mask"].sum())
            infos.append({"id": s["id"], "category_id": s["category_id"], "area": area, "bbox": bbox,
                          "iscrowd": s["iscrowd"]})
            if s["category_id"] <= len(THINGS):
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": s["category_id"],
                             "segmentation": rle, "area": area, "bbox": bbox, "iscrowd": s["iscrowd"]})
        pan_anns.append({"image_id": i + 1, "file_name": name, "segments_info": infos})
    info = {"description": f"kseg synthetic shapes ({SPLITS[split]}, seed {seed})"}
    (folder / "instances.json").write_text(json.dumps(
        {"info": info, "images": images, "annotations": anns, "categories": categories()}))
    (folder / "panoptic.json").write_text(json.dumps(
        {"info": info, "images": images, "annotations": pan_anns, "categories": categories(panoptic=True)}))


def _check(images: int, val: int, size: int, max_objects: int, min_area: int, crowd: float) -> None:
    checks = (("images", images >= 1, "at least 1"), ("val", val >= 0, "0 or more"),
              ("size", 32 <= size <= 4096, "32..4096 pixels"), ("max-objects", max_objects >= 1, "at least 1"),
              ("min-area", min_area >= 1, "at least 1 pixel"), ("crowd", 0 <= crowd <= 1, "a probability, 0..1"))
    for name, ok, want in checks:
        if not ok:
            raise KsegError(f"--{name} must be {want}")


def generate_shapes(out, images: int = 200, val: int = 50, size: int = 256, seed: int = 0, max_objects: int = 6,
                    min_area: int = 64, crowd: float = 0.0) -> dict:
    """Write the synthetic shapes dataset (``images`` training and ``val`` validation images) to ``out``.

    ``out`` must not exist or be an empty folder. Returns ``{"out", "train", "val", "seconds"}``.
    """
    _check(images, val, size, max_objects, min_area, crowd)
    out = Path(out).expanduser()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise KsegError(f"{out}: exists and is not an empty folder; choose a new folder")
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{os.getpid()}-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    opts = {"max_objects": max_objects, "min_area": min_area, "crowd": crowd}
    try:
        for split, n in enumerate((images, val)):
            if n:
                _write_split(tmp / SPLITS[split], split, n, size, seed, opts)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "train": images, "val": val, "seconds": time.perf_counter() - start}


def _parser():
    from kseg.commandline import command_parser

    p = command_parser("kseg.data.shapes", "Write a synthetic COCO instance and panoptic dataset: circles, squares, "
                       "triangles, stars and ellipses (things) on sky, ground and water (stuff).")
    p.add_argument("out", help="the output folder (new or empty); gets train/ and val/")
    p.add_argument("--images", type=int, default=200, help="training images")
    p.add_argument("--val", type=int, default=50, help="validation images (0: no val/)")
    p.add_argument("--size", type=int, default=256, help="image height and width in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same dataset")
    p.add_argument("--max-objects", type=int, default=6, help="at most this many things an image")
    p.add_argument("--min-area", type=int, default=64, help="things with fewer visible pixels are left out")
    p.add_argument("--crowd", type=float, default=0.0,
                   help="probability that an image gets a crowd region (iscrowd=1: a cluster of small shapes)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


@cli_entry
def main(argv=None):
    args = _parser().parse_args(argv)
    r = generate_shapes(args.out, images=args.images, val=args.val, size=args.size, seed=args.seed,
                        max_objects=args.max_objects, min_area=args.min_area, crowd=args.crowd)
    print(f"kseg: wrote {r['train']} train and {r['val']} val images ({args.size}x{args.size}; "
          f"{len(THINGS)} thing and {len(STUFF)} stuff classes) to {r['out']} in {r['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
