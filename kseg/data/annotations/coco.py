"""COCO instance or stuff JSON: polygons and RLE decoded with pycocotools."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.data.annotations.common import (IGNORE_ID, _check_classes, _image_size, _is_background, _is_ignore,
                                          _load_json, _Output, _palette, _stem, _summary, voc_colormap)
from kseg.data.matching import IMAGE_EXTS
from kseg.errors import KsegError


def _coco_mask(path: Path, ann: dict, h: int, w: int):
    """The annotation's mask (bool HxW), or None when it has no segmentation."""
    import pycocotools.mask as mask_utils

    seg = ann.get("segmentation")
    aid = ann.get("id")
    where = f"{path}: annotation {aid}"
    if seg is None or (isinstance(seg, list) and not seg):
        return None
    if isinstance(seg, list):
        polys = []
        for poly in seg:
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                raise KsegError(f"{where}: segmentation must be polygons [[x1, y1, x2, y2, ...], ...] or RLE")
            if len(poly) % 2:
                raise KsegError(f"{where}: polygon with an odd number of coordinates ({len(poly)})")
            if len(poly) < 6:
                raise KsegError(f"{where}: polygon with {len(poly) // 2} point(s); a polygon needs at least 3")
            polys.append([float(v) for v in poly])
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if list(size) != [h, w]:
            raise KsegError(f"{where}: RLE size {list(size)} (HxW) is not the image's {h}x{w}")
        if isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg["counts"], (str, bytes)):
            rle = {"size": [h, w], "counts": seg["counts"]}
        else:
            raise KsegError(f"{where}: RLE counts must be a list of run lengths or a compressed string")
    else:
        raise KsegError(f"{where}: segmentation must be polygons [[x1, y1, x2, y2, ...], ...] or RLE")
    try:
        m = mask_utils.decode(rle)
    except Exception as err:  # pycocotools raises plain Exceptions for corrupt counts
        raise KsegError(f"{where}: cannot decode the RLE ({err})") from None
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != (h, w):
        raise KsegError(f"{where}: decoded mask is {m.shape[0]}x{m.shape[1]}, the image is {h}x{w}")
    return m.astype(bool)


def import_coco(annotations_json, images_dir, out, overwrite: bool = False, crowd: str = "ignore") -> dict:
    """Import a COCO instance (or stuff) JSON and its images into ``out``.

    Categories, sorted by id, become ids 1..K (0 = background; a category named
    ``background`` becomes id 0). Segmentations (polygons, uncompressed or
    compressed RLE) are decoded with pycocotools and painted largest first, so
    small objects stay on top. Crowd regions (``iscrowd=1``) are painted first as
    unknown (255) with ``crowd="ignore"``, or as their category with
    ``crowd="class"``. Images without annotations get an all-background mask.

    Args:
        annotations_json: the COCO JSON file.
        images_dir: the folder of the images (``file_name`` is relative to it);
            None: the JSON's folder.
        out: the output folder.
        overwrite: replace the output's images/, masks/, classes.txt and palette.json.
        crowd: "ignore" or "class".

    Returns ``{"out", "class_names", "images", "annotations", "empty_images", "crowd", "notes"}``.
    """
    if crowd not in ("ignore", "class"):
        raise KsegError(f"crowd={crowd!r}: expected 'ignore' or 'class'")
    path = Path(annotations_json).expanduser()
    if not path.is_file():
        raise KsegError(f"{path}: no such file")
    images_dir = Path(images_dir).expanduser() if images_dir is not None else path.parent
    if not images_dir.is_dir():
        raise KsegError(f"{images_dir}: no such folder")
    doc, anns = _coco_doc(path)
    class_names, cat_ids, ignored = _coco_classes(path, doc["categories"])
    imgs, by_image = _coco_index(path, doc["images"], anns, cat_ids)
    colors = voc_colormap()[: len(class_names)]
    pal = _palette(colors)
    empty = no_seg = n_crowd = 0
    if not imgs:
        raise KsegError(f"{path}: no images")
    with _Output(out, overwrite, path) as w:
        for iid, info in imgs.items():
            img, (h, wd) = _coco_image(path, images_dir, iid, info)
            label, painted, skipped, crowds = _coco_label(path, by_image[iid], (h, wd), cat_ids, crowd)
            no_seg += skipped
            n_crowd += crowds
            empty += not painted
            w.add(_stem(info["file_name"]), f"{path}: image {iid}", img, label, pal)
        if no_seg and no_seg == len(anns):
            raise KsegError(f"{path}: no annotation has a segmentation (bounding boxes only?)")
        notes = _coco_notes(len(imgs), empty, no_seg, n_crowd if crowd == "ignore" else 0, ignored, w.converted)
        out_path = w.finish(class_names, colors)
    result = {"out": out_path, "class_names": class_names, "images": len(imgs), "annotations": len(anns) - no_seg,
              "empty_images": empty, "crowd": n_crowd}
    return _summary(result, path, notes)


def _coco_doc(path: Path):
    """``(document, annotations)`` of a COCO instance or stuff file (a panoptic file is refused)."""
    doc = _load_json(path)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
        raise KsegError(f"{path}: not a COCO file (needs 'images', 'annotations' and 'categories' lists)")
    anns = doc.get("annotations") or []
    if not isinstance(anns, list):
        raise KsegError(f"{path}: 'annotations' must be a list")
    if any(isinstance(a, dict) and "segments_info" in a for a in anns[:1]):
        raise KsegError(f"{path}: a COCO panoptic file; kseg imports instance or stuff annotations")
    return doc, anns


def _coco_classes(path: Path, categories):
    """``(class names, category id -> class id, ignore category names)``: categories sorted by id."""
    cats = {}
    for c in categories:
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise KsegError(f"{path}: each category needs an id and a name; got {c!r}")
        if c["id"] in cats:
            raise KsegError(f"{path}: category id {c['id']} appears twice")
        cats[c["id"]] = c["name"]
    if not cats:
        raise KsegError(f"{path}: no categories")
    class_names = ["background"]
    cat_ids: dict = {}
    ignored = []
    for cid in sorted(cats, key=lambda v: (str(type(v)), v)):
        name = cats[cid]
        if _is_background(name):
            class_names[0] = name
            cat_ids[cid] = 0
        elif _is_ignore(name):
            cat_ids[cid] = IGNORE_ID
            ignored.append(name)
        else:
            cat_ids[cid] = len(class_names)
            class_names.append(name)
    _check_classes(class_names, path)
    return class_names, cat_ids, ignored


def _coco_index(path: Path, images, anns, cat_ids):
    """``(image id -> image entry, image id -> its annotations)``, every reference checked."""
    imgs = {}
    for im in images:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise KsegError(f"{path}: each image needs an id and a file_name; got {im!r}")
        if im["id"] in imgs:
            raise KsegError(f"{path}: image id {im['id']} appears twice")
        imgs[im["id"]] = im
    by_image: dict = {k: [] for k in imgs}
    for a in anns:
        if not isinstance(a, dict):
            raise KsegError(f"{path}: each annotation must be an object; got {a!r}")
        if a.get("image_id") not in imgs:
            raise KsegError(f"{path}: annotation {a.get('id')}: image id {a.get('image_id')!r} is not in images")
        if a.get("category_id") not in cat_ids:
            raise KsegError(f"{path}: annotation {a.get('id')}: category id {a.get('category_id')!r} is not in "
                            f"categories")
        by_image[a["image_id"]].append(a)
    return imgs, by_image


def _coco_image(path: Path, images_dir: Path, iid, info: dict):
    """``(image path, (height, width))`` of an image entry; its file name may hold folders the images lack."""
    rel = info["file_name"]
    img = images_dir / rel
    if not img.is_file():
        alt = images_dir / Path(rel.replace("\\", "/")).name
        if not alt.is_file():
            raise KsegError(f"{path}: image {iid}: missing image {img}")
        img = alt
    h, wd = _image_size(img)
    jh, jw = info.get("height"), info.get("width")
    if isinstance(jh, int) and isinstance(jw, int) and (jh, jw) != (h, wd):
        raise KsegError(f"{path}: image {iid} ({rel}): height x width is {jh}x{jw} but {img} is {h}x{wd}")
    return img, (h, wd)


def _coco_label(path: Path, anns, hw, cat_ids, crowd):
    """``(label map, anything painted, annotations without segmentation, crowd regions)`` of one image.

    Ignored crowd regions are painted first, then the instances largest first (in file order among equals).
    """
    h, wd = hw
    label = np.zeros((h, wd), np.uint8)
    painted = []
    no_seg = n_crowd = 0
    for a in anns:
        m = _coco_mask(path, a, h, wd)
        if m is None:
            no_seg += 1
            continue
        is_crowd = bool(a.get("iscrowd", 0))
        n_crowd += is_crowd
        first = is_crowd and crowd == "ignore"
        cid = IGNORE_ID if first else cat_ids[a["category_id"]]
        painted.append((0 if first else 1, -int(m.sum()), len(painted), m, cid))
    for *_, m, cid in sorted(painted, key=lambda t: t[:3]):
        label[m] = cid
    return label, bool(painted), no_seg, n_crowd


def _coco_notes(n_images, empty, no_seg, ignored_crowd, ignored, converted) -> list[str]:
    notes = []
    if empty:
        notes.append(f"{empty} of the {n_images} images have no annotations: their masks are all background")
    if no_seg:
        notes.append(f"skipped {no_seg} annotation(s) without a segmentation (bounding box only)")
    if ignored_crowd:
        notes.append(f"{ignored_crowd} crowd region(s) (iscrowd=1) marked unknown ({IGNORE_ID}); "
                     f"--crowd class (crowd='class') paints them as their category")
    if ignored:
        notes.append(f"category(ies) {', '.join(ignored)} mark unknown pixels ({IGNORE_ID})")
    if converted:
        notes.append(f"{converted} image(s) re-encoded as PNG (kseg reads {', '.join(IMAGE_EXTS)})")
    return notes
