"""kseg.data.annotations: LabelMe, CVAT and COCO imports into kseg's folder layout."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kseg.data import folder
from kseg.data.annotations import (detect_format, import_annotations, import_coco, import_cvat, import_labelme,
                                   main, voc_colormap)
from kseg.errors import KsegError


def _png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _mask(out: Path, stem: str) -> np.ndarray:
    with Image.open(out / "masks" / f"{stem}.png") as im:
        assert im.mode == "P"
        return np.asarray(im)


def _lm(path: Path, shapes, h=40, w=50, image="img.png", data=None) -> Path:
    doc = {"version": "5.4.1", "flags": {}, "shapes": [
        {"label": lab, "points": pts, "group_id": None, "shape_type": kind, "flags": {}, **extra}
        for lab, kind, pts, *rest in shapes for extra in [rest[0] if rest else {}]],
        "imagePath": image, "imageData": data, "imageHeight": h, "imageWidth": w}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


# --------------------------------------------------------------------------- LabelMe


def test_labelme_shapes_pixel_counts_and_round_trip(tmp_path, capsys):
    src = tmp_path / "lm"
    _png(src / "img.png", 40, 50)
    tri = [[20, 5], [35, 5], [20, 25]]
    _lm(src / "a.json", [("box", "rectangle", [[6, 8], [2, 3]]),
                         ("tri", "polygon", tri),
                         ("circ", "circle", [[10, 30], [10, 36]])])
    res = import_labelme(src, tmp_path / "out")
    out = tmp_path / "out"
    assert res["class_names"] == ["background", "box", "circ", "tri"]
    lab = _mask(out, "a")
    assert lab.shape == (40, 50)
    # rectangle: both corners inclusive, exactly 5 x 6 pixels, at rows 3..8 and columns 2..6
    box = lab == 1
    assert box.sum() == 30 and box[3:9, 2:7].all()
    # triangle: close to PIL's polygon fill and to Pick's theorem's count of the pixel centres inside or on
    # its edges: area 15 * 20 / 2 + boundary points (15 + 20 + 5) / 2 + 1 = 171
    ref = Image.new("L", (50, 40))
    ImageDraw.Draw(ref).polygon([tuple(p) for p in tri], fill=1)
    ref = np.asarray(ref).astype(bool)
    got = lab == 3
    assert abs(int(got.sum()) - 171) <= 8
    assert (got & ref).sum() / (got | ref).sum() > 0.95
    # circle of radius 6 around (10, 30): about pi * 36 pixels, centred there
    circ = lab == 2
    assert abs(int(circ.sum()) - np.pi * 36) <= 0.12 * np.pi * 36
    assert circ[30, 10] and not circ[30, 17] and not circ[22, 10]
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    # the image is copied (same bytes), the source stays
    assert (out / "images" / "img.png").exists() is False
    assert (out / "images" / "a.png").read_bytes() == (src / "img.png").read_bytes()
    assert (src / "img.png").exists()
    assert (out / "classes.txt").read_text() == "background\nbox\ncirc\ntri\n"
    pal = json.loads((out / "palette.json").read_text())
    assert list(pal) == ["background", "box", "circ", "tri"]
    assert pal["box"] == [128, 0, 0] and pal["background"] == [0, 0, 0]
    with Image.open(out / "masks" / "a.png") as im:
        assert im.getpalette()[3:6] == [128, 0, 0]
    printed = capsys.readouterr().out
    assert printed == (f"kseg: imported 1 images, 4 classes (background, box, circ, tri) from {src} "
                       f"into {out}\n")
    ds = folder(out)
    assert ds.class_names == ("background", "box", "circ", "tri")
    assert ds.ids == ["a"]
    np.testing.assert_array_equal(ds.labels[0], lab.astype(np.int8))


def test_labelme_later_shapes_paint_over_earlier(tmp_path):
    src = tmp_path / "lm"
    _png(src / "img.png", 20, 20)
    a = ("a", "rectangle", [[0, 0], [9, 9]])
    b = ("b", "rectangle", [[5, 5], [14, 14]])
    _lm(src / "ab.json", [a, b], 20, 20)
    _lm(src / "ba.json", [b, a], 20, 20)
    import_labelme(src, tmp_path / "out")
    ab, ba = _mask(tmp_path / "out", "ab"), _mask(tmp_path / "out", "ba")
    assert ab[7, 7] == 2 and ba[7, 7] == 1  # the overlap takes the later shape
    assert ab[2, 2] == 1 and ab[12, 12] == 2 and ab[18, 18] == 0


def test_labelme_image_data_only(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 16, 3), 77, np.uint8)).save(buf, format="PNG")
    src = tmp_path / "lm"
    _lm(src / "x.json", [("cat", "polygon", [[1, 1], [10, 1], [10, 8], [1, 8]])], 12, 16,
        image="gone/x.png", data=base64.b64encode(buf.getvalue()).decode())
    import_labelme(src, tmp_path / "out")
    assert (tmp_path / "out" / "images" / "x.png").read_bytes() == buf.getvalue()
    lab = _mask(tmp_path / "out", "x")
    assert lab[4, 5] == 1 and lab[0, 0] == 0 and lab[11, 15] == 0


def test_labelme_missing_image_names_the_file(tmp_path):
    src = tmp_path / "lm"
    _lm(src / "x.json", [("cat", "polygon", [[1, 1], [10, 1], [10, 8]])], image="nowhere.jpg")
    with pytest.raises(KsegError, match=r"x\.json: missing image: imagePath 'nowhere\.jpg' not found next to it "
                                        r"and no imageData"):
        import_labelme(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_labelme_labels_file_with_ignore_and_background(tmp_path):
    src = tmp_path / "lm"
    _png(src / "img.png", 20, 20)
    _lm(src / "a.json", [("dog", "rectangle", [[0, 0], [19, 19]]),
                         ("__ignore__", "rectangle", [[0, 0], [4, 4]]),
                         ("_background_", "rectangle", [[15, 15], [19, 19]])], 20, 20)
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\ndog\n")
    res = import_labelme(src, tmp_path / "out", labels=labels)
    assert res["class_names"] == ["_background_", "cat", "dog"]
    lab = _mask(tmp_path / "out", "a")
    assert lab[2, 2] == 255 and lab[10, 10] == 2 and lab[17, 17] == 0
    ds = folder(tmp_path / "out")
    assert ds.class_names == ("_background_", "cat", "dog")
    assert ds.labels[0][2, 2] == -1 and ds.labels[0][10, 10] == 2
    # a label that labels.txt does not list
    _lm(src / "b.json", [("bird", "rectangle", [[0, 0], [3, 3]])], 20, 20)
    with pytest.raises(KsegError, match=r"b\.json: shape 0: label 'bird' is not in .*labels\.txt "
                                        r"\(its classes: _background_, cat, dog\)"):
        import_labelme(src, tmp_path / "out2", labels=labels)


def test_labelme_background_must_be_first_in_labels(tmp_path):
    src = tmp_path / "lm"
    _png(src / "img.png", 20, 20)
    _lm(src / "a.json", [("cat", "rectangle", [[0, 0], [3, 3]])], 20, 20)
    with pytest.raises(KsegError, match="labels: '_background_' must be the first class"):
        import_labelme(src, tmp_path / "out", labels=["cat", "_background_"])
    res = import_labelme(src, tmp_path / "out", labels=["cat"])
    assert res["class_names"] == ["background", "cat"]


def test_labelme_points_skipped_lines_drawn_with_width(tmp_path, capsys):
    src = tmp_path / "lm"
    _png(src / "img.png", 40, 50)
    _lm(src / "a.json", [("road", "line", [[5, 20], [35, 20]]), ("spot", "point", [[40, 5]])])
    res = import_labelme(src, tmp_path / "out")
    assert res["skipped_points"] == 1
    assert res["class_names"] == ["background", "road"]  # "spot" marks only a point: no class
    lab = _mask(tmp_path / "out", "a")
    assert lab[5, 40] == 0
    rows = np.nonzero((lab == 1).any(axis=1))[0]
    assert 9 <= len(rows) <= 11 and rows.min() >= 14 and rows.max() <= 26  # 10 pixels wide
    assert (lab[20, 5:36] == 1).all()
    err = capsys.readouterr().err
    assert "kseg: skipped 1 point shape(s) (a.json): a point marks no region\n" in err


def test_labelme_mask_shape(tmp_path):
    bits = np.zeros((4, 5), np.uint8)
    bits[1:3, 1:4] = 1
    buf = io.BytesIO()
    Image.fromarray(bits * 255).save(buf, format="PNG")
    src = tmp_path / "lm"
    _png(src / "img.png", 20, 20)
    _lm(src / "a.json", [("blob", "mask", [[10, 12], [14, 15]], {"mask": base64.b64encode(buf.getvalue()).decode()})],
        20, 20)
    import_labelme(src, tmp_path / "out")
    lab = _mask(tmp_path / "out", "a")
    expect = np.zeros((20, 20), np.uint8)
    expect[12:16, 10:15] = bits
    np.testing.assert_array_equal(lab, expect)


def test_labelme_exif_rotated_image_written_turned(tmp_path, capsys):
    src = tmp_path / "lm"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 10 high, shown turned: 10 wide x 20 high
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(src / "img.jpg", exif=exif)
    _lm(src / "a.json", [("cat", "rectangle", [[0, 0], [9, 4]])], h=20, w=10, image="img.jpg")
    import_labelme(src, tmp_path / "out")
    with Image.open(tmp_path / "out" / "images" / "a.png") as im:
        assert im.size == (10, 20)
    assert _mask(tmp_path / "out", "a").shape == (20, 10)
    assert ("kseg: 1 image(s) turned by their EXIF orientation, as LabelMe shows them (written as PNG)\n"
            in capsys.readouterr().err)


@pytest.mark.parametrize("shapes, message", [
    ([("cat", "polygon", [[1, 1], [5, 5]])],
     r"a\.json: shape 0 \('cat', polygon\): polygon with 2 point\(s\); a polygon needs at least 3"),
    ([("cat", "cuboid", [[1, 1], [5, 5]])],
     r"a\.json: shape 0 \('cat'\): unknown shape type 'cuboid' \(known: polygon, rectangle"),
    ([("cat", "rectangle", [[1, 1]])], r"a\.json: shape 0 \('cat', rectangle\): needs 2 points, has 1"),
])
def test_labelme_bad_shapes(tmp_path, shapes, message):
    src = tmp_path / "lm"
    _png(src / "img.png", 40, 50)
    _lm(src / "a.json", shapes)
    with pytest.raises(KsegError, match=message):
        import_labelme(src, tmp_path / "out")


def test_labelme_malformed_json(tmp_path):
    src = tmp_path / "lm"
    src.mkdir()
    (src / "a.json").write_text('{"shapes": [')
    with pytest.raises(KsegError, match=r"a\.json: malformed JSON \("):
        import_labelme(src, tmp_path / "out")


# --------------------------------------------------------------------------- CVAT

CVAT_COLORS = {"background": (0, 0, 0), "cat": (250, 50, 83), "dog": (51, 221, 255)}


def _cvat_export(root: Path, with_images=True, labelmap=None, extra_color=None) -> dict:
    """Write a CVAT 'Segmentation mask 1.1' export into ``root``: the expected id maps by image name."""
    root.mkdir(parents=True)
    lines = labelmap or [f"{n}:{','.join(map(str, c))}::" for n, c in CVAT_COLORS.items()]
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "\n".join(lines) + "\n")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "default.txt").write_text("frame_000\nframe_001\n")
    cols = np.array(list(CVAT_COLORS.values()), np.uint8)
    expected = {}
    for i, name in enumerate(("frame_000", "frame_001")):
        ids = np.zeros((12, 16), np.uint8)
        ids[2:6, 3:9] = 1
        ids[7:11, 8 + i:14] = 2
        rgb = cols[ids]
        if extra_color is not None and i == 1:
            rgb[0, 0] = extra_color
        for sub in ("SegmentationClass", "SegmentationObject"):
            (root / sub).mkdir(exist_ok=True)
            Image.fromarray(rgb).save(root / sub / f"{name}.png")
        if with_images:
            _png(root / "JPEGImages" / f"{name}.jpg", 12, 16, seed=i)
        expected[name] = ids
    return expected


def _zip(folder_: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(folder_.rglob("*")):
            zf.write(p, p.relative_to(folder_).as_posix())
    return path


def test_cvat_zip(tmp_path, capsys):
    expected = _cvat_export(tmp_path / "exp")
    z = _zip(tmp_path / "exp", tmp_path / "task.zip")
    out = tmp_path / "out"
    res = import_cvat(z, out)
    assert res["class_names"] == ["background", "cat", "dog"]
    assert res["images"] == 2
    for name, ids in expected.items():
        lab = _mask(out, name)
        np.testing.assert_array_equal(lab, ids)
        assert (out / "images" / f"{name}.jpg").read_bytes() == (tmp_path / "exp" / "JPEGImages" /
                                                                 f"{name}.jpg").read_bytes()
    with Image.open(out / "masks" / "frame_000.png") as im:
        assert im.getpalette()[:9] == [0, 0, 0, 250, 50, 83, 51, 221, 255]
    assert json.loads((out / "palette.json").read_text()) == {k: list(v) for k, v in CVAT_COLORS.items()}
    assert capsys.readouterr().out == (f"kseg: imported 2 images, 3 classes (background, cat, dog) from {z} "
                                       f"into {out}\n")
    ds = folder(out)
    assert ds.class_names == ("background", "cat", "dog")
    for i, name in enumerate(ds.ids):
        np.testing.assert_array_equal(ds.labels[i], expected[name].astype(np.int8))


def test_cvat_folder_without_images_takes_images_folder(tmp_path):
    expected = _cvat_export(tmp_path / "exp", with_images=False)
    with pytest.raises(KsegError, match=r"frame_000\.png: missing image: no image named frame_000\.\* \(the export "
                                        r"has no images: export with images, or pass --images DIR / images=\.\.\.\)"):
        import_cvat(tmp_path / "exp", tmp_path / "out")
    imgs = tmp_path / "pics"
    _png(imgs / "frame_000.png", 12, 16)
    _png(imgs / "frame_001.png", 12, 16)
    import_annotations(tmp_path / "exp", tmp_path / "out", images=imgs)
    np.testing.assert_array_equal(_mask(tmp_path / "out", "frame_001"), expected["frame_001"])
    assert (tmp_path / "out" / "images" / "frame_001.png").exists()


def test_cvat_colour_not_in_labelmap(tmp_path):
    _cvat_export(tmp_path / "exp", extra_color=(1, 2, 3))
    z = _zip(tmp_path / "exp", tmp_path / "task.zip")
    with pytest.raises(KsegError, match=r"task\.zip:SegmentationClass/frame_001\.png: colour \(1, 2, 3\) \(1 pixels\) "
                                        r"is not in labelmap\.txt$"):
        import_cvat(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cvat_labelmap_without_background(tmp_path, capsys):
    lines = ["cat:250,50,83::", "dog:51,221,255::"]
    expected = _cvat_export(tmp_path / "exp", labelmap=lines)
    res = import_cvat(tmp_path / "exp", tmp_path / "out")
    assert res["class_names"] == ["background", "cat", "dog"]
    np.testing.assert_array_equal(_mask(tmp_path / "out", "frame_000"), expected["frame_000"])
    assert ("kseg: labelmap.txt has no background: black (0, 0, 0) pixels are background (id 0)\n"
            in capsys.readouterr().err)


# --------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path, anns, categories=None, n_images=2, h=30, w=40) -> Path:
    imgs = tmp_path / "imgs"
    images = []
    for i in range(n_images):
        _png(imgs / f"im{i}.png", h, w, seed=i)
        images.append({"id": 10 + i, "file_name": f"im{i}.png", "height": h, "width": w})
    cats = categories or [{"id": 7, "name": "tree", "supercategory": "x"},
                          {"id": 1, "name": "person", "supercategory": "x"},
                          {"id": 3, "name": "car", "supercategory": "x"}]
    doc = {"images": images, "annotations": anns, "categories": cats}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def _rle_compressed(m: np.ndarray) -> dict:
    import pycocotools.mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def _rle_uncompressed(m: np.ndarray) -> dict:
    flat = m.astype(np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": list(m.shape), "counts": counts}


def _coco_case():
    person = np.zeros((30, 40), bool)
    person[2:28, 2:30] = True  # big: from the polygon below
    car = np.zeros((30, 40), bool)
    car[5:10, 5:12] = True  # small, inside the person: uncompressed RLE
    tree = np.zeros((30, 40), bool)
    tree[15:25, 31:38] = True  # compressed RLE
    crowd = np.zeros((30, 40), bool)
    crowd[25:30, 8:20] = True  # partly under the person: only its uncovered part stays unknown
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "segmentation": _rle_uncompressed(car), "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 1, "segmentation": [[2, 2, 29, 2, 29, 27, 2, 27]], "iscrowd": 0},
        {"id": 3, "image_id": 10, "category_id": 7, "segmentation": _rle_compressed(tree), "iscrowd": 0},
        {"id": 4, "image_id": 10, "category_id": 1, "segmentation": _rle_uncompressed(crowd), "iscrowd": 1},
    ]
    return anns, person, car, tree, crowd


def test_coco_polygon_rle_crowd_small_on_top(tmp_path, capsys):
    import pycocotools.mask as mask_utils

    anns, person, car, tree, crowd = _coco_case()
    path = _coco(tmp_path, anns)
    out = tmp_path / "out"
    res = import_coco(path, tmp_path / "imgs", out)
    # categories sorted by id: person (1), car (3), tree (7)
    assert res["class_names"] == ["background", "person", "car", "tree"]
    assert res["empty_images"] == 1 and res["crowd"] == 1
    lab = _mask(out, "im0")
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 2, 29, 2, 29, 27, 2, 27]], 30, 40)))
    expected = np.zeros((30, 40), np.uint8)
    expected[crowd] = 255
    expected[poly.astype(bool)] = 1
    expected[car] = 2
    expected[tree] = 3
    np.testing.assert_array_equal(lab, expected)
    assert (lab == 2).sum() == car.sum()  # the small car is not hidden by the person painted after it
    assert (lab == 255).sum() == (crowd & ~poly.astype(bool)).sum() > 0
    assert (_mask(out, "im1") == 0).all()
    io_ = capsys.readouterr()
    assert io_.out == (f"kseg: imported 2 images, 4 classes (background, person, car, tree) from {path} "
                       f"into {out}\n")
    assert io_.err == ("kseg: 1 of the 2 images have no annotations: their masks are all background\n"
                       "kseg: 1 crowd region(s) (iscrowd=1) marked unknown (255); --crowd class (crowd='class') "
                       "paints them as their category\n")
    ds = folder(out)
    assert ds.class_names == ("background", "person", "car", "tree")
    np.testing.assert_array_equal(ds.labels[0], np.where(expected == 255, -1, expected).astype(np.int8))


def test_coco_crowd_as_class(tmp_path):
    anns, person, car, tree, crowd = _coco_case()
    path = _coco(tmp_path, anns)
    import_coco(path, tmp_path / "imgs", tmp_path / "out", crowd="class")
    lab = _mask(tmp_path / "out", "im0")
    assert not (lab == 255).any()
    assert (lab[crowd] == 1).all()


@pytest.mark.parametrize("ann, message", [
    ({"id": 5, "image_id": 99, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},
     r"instances\.json: annotation 5: image id 99 is not in images"),
    ({"id": 6, "image_id": 10, "category_id": 1, "segmentation": [[1, 1, 5, 1]]},
     r"instances\.json: annotation 6: polygon with 2 point\(s\); a polygon needs at least 3"),
    ({"id": 7, "image_id": 10, "category_id": 2, "segmentation": [[1, 1, 5, 1, 5, 5]]},
     r"instances\.json: annotation 7: category id 2 is not in categories"),
])
def test_coco_bad_annotations(tmp_path, ann, message):
    path = _coco(tmp_path, [ann])
    with pytest.raises(KsegError, match=message):
        import_coco(path, tmp_path / "imgs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_coco_missing_image(tmp_path):
    path = _coco(tmp_path, [])
    (tmp_path / "imgs" / "im1.png").unlink()
    with pytest.raises(KsegError, match=r"instances\.json: image 11: missing image .*im1\.png"):
        import_coco(path, tmp_path / "imgs", tmp_path / "out")


# --------------------------------------------------------------------------- detection, overwriting, CLI


def test_detect_format(tmp_path):
    _cvat_export(tmp_path / "exp")
    z = _zip(tmp_path / "exp", tmp_path / "task.zip")
    coco = _coco(tmp_path / "c", [])
    lm = tmp_path / "lm"
    _lm(lm / "a.json", [("cat", "rectangle", [[0, 0], [3, 3]])])
    assert detect_format(z) == "cvat"
    assert detect_format(tmp_path / "exp") == "cvat"
    assert detect_format(coco) == "coco"
    assert detect_format(lm) == "labelme"
    assert detect_format(lm / "a.json") == "labelme"
    with pytest.raises(KsegError, match=r"c: holds the COCO file instances\.json: pass the file itself"):
        detect_format(tmp_path / "c")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("hi")
    with pytest.raises(KsegError, match=r"other: cannot tell the annotation format: expected a CVAT export"):
        detect_format(tmp_path / "other")
    # import_annotations dispatches on it
    res = import_annotations(coco, tmp_path / "out", images=tmp_path / "c" / "imgs")
    assert res["class_names"] == ["background", "person", "car", "tree"]


def test_refuses_to_overwrite_then_replaces_only_its_own_files(tmp_path):
    src = tmp_path / "lm"
    _png(src / "img.png", 20, 20)
    _lm(src / "a.json", [("cat", "rectangle", [[0, 0], [3, 3]])], 20, 20)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "mine.jpg").write_bytes(b"precious")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(KsegError, match=r"out: exists and is not empty; choose a new folder or pass --overwrite "
                                        r"\(overwrite=True\) to replace its images/, masks/, classes\.txt and "
                                        r"palette\.json"):
        import_labelme(src, out)
    assert (out / "images" / "mine.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["images", "notes.txt"]
    import_labelme(src, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt", "images", "masks", "notes.txt", "palette.json"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".tmp-*")) and not list(out.glob(".old-*"))
    # an empty existing folder is fine without overwrite
    (tmp_path / "empty").mkdir()
    import_labelme(src, tmp_path / "empty")
    assert (tmp_path / "empty" / "masks" / "a.png").exists()


def test_cli_imports_and_bad_input_exits_2(tmp_path, capsys):
    src = tmp_path / "lm"
    _png(src / "img.png", 20, 20)
    _lm(src / "a.json", [("cat", "rectangle", [[0, 0], [3, 3]])], 20, 20)
    assert main([str(src), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("kseg: imported 1 images, 2 classes (background, cat) from ")
    (src / "b.json").write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        main([str(src), "--out", str(tmp_path / "out2"), "--format", "labelme"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kseg: error: {src / 'b.json'}: malformed JSON (")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main([str(src), "--out", str(tmp_path / "out3"), "--crowd", "class", "--format", "labelme"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"kseg: error: --crowd does not apply to a labelme source ({src})\n"
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_voc_colormap():
    cmap = voc_colormap()
    assert cmap[0].tolist() == [0, 0, 0] and cmap[1].tolist() == [128, 0, 0] and cmap[15].tolist() == [192, 128, 128]
    assert cmap[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in cmap}) == 256


def test_coco_bbox_only_and_void_category_notes(tmp_path, capsys):
    sq = np.zeros((30, 40), bool)
    sq[0:4, 0:4] = True
    anns = [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [1, 1, 5, 5], "segmentation": []},
            {"id": 2, "image_id": 10, "category_id": 9, "segmentation": _rle_compressed(sq)},
            {"id": 3, "image_id": 11, "category_id": 3, "segmentation": [[0, 0, 9, 0, 9, 9, 0, 9]]}]
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 9, "name": "void"}]
    path = _coco(tmp_path, anns, categories=cats)
    res = import_coco(path, tmp_path / "imgs", tmp_path / "out")
    assert res["class_names"] == ["background", "person", "car"]
    assert (_mask(tmp_path / "out", "im0")[sq] == 255).all()
    assert res["annotations"] == 2
    err = capsys.readouterr().err
    assert "kseg: skipped 1 annotation(s) without a segmentation (bounding box only)\n" in err
    assert "kseg: category(ies) void mark unknown pixels (255)\n" in err
    only_boxes = _coco(tmp_path / "b", [anns[0]], categories=cats)
    with pytest.raises(KsegError, match=r"instances\.json: no annotation has a segmentation \(bounding boxes only\?\)"):
        import_coco(only_boxes, tmp_path / "b" / "imgs", tmp_path / "out2")


def test_labelme_void_label_and_tiff_image(tmp_path, capsys):
    src = tmp_path / "lm"
    src.mkdir()
    Image.fromarray(np.full((20, 20, 3), 9, np.uint8)).save(src / "img.tif")
    _lm(src / "a.json", [("cat", "rectangle", [[0, 0], [9, 9]]), ("void", "rectangle", [[0, 0], [2, 2]])],
        20, 20, image="img.tif")
    res = import_labelme(src, tmp_path / "out")
    assert res["class_names"] == ["background", "cat"]
    assert _mask(tmp_path / "out", "a")[1, 1] == 255
    with Image.open(tmp_path / "out" / "images" / "a.png") as im:  # kseg's loader reads no TIFF
        assert (np.asarray(im) == 9).all()
    err = capsys.readouterr().err
    assert "kseg: label(s) void mark unknown pixels (255)\n" in err
    assert "kseg: 1 image(s) re-encoded as PNG (kseg reads .jpg, .jpeg, .png, .bmp, .gif)\n" in err
    ds = folder(tmp_path / "out")
    assert ds.class_names == ("background", "cat") and ds.labels[0][1, 1] == -1


def test_overwrite_refuses_a_folder_holding_the_source(tmp_path):
    src = tmp_path / "proj" / "lm"
    _png(src / "img.png", 20, 20)
    _lm(src / "a.json", [("cat", "rectangle", [[0, 0], [3, 3]])], 20, 20)
    with pytest.raises(KsegError, match=r"proj: holds the source .*lm; import into another folder"):
        import_labelme(src, tmp_path / "proj", overwrite=True)
    assert (src / "img.png").exists() and (src / "a.json").exists()
