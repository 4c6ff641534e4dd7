"""The user's own data: kseg.data.folder and ``train --data-format folder``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kseg.data import folder, folder_datasets, make_dataset, read_palette
from kseg.errors import KsegError

COLORS = {"sky": (70, 130, 180), "road": (128, 64, 128), "car": (220, 20, 60)}


def label_map(h, w, seed):
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int64)
    lab[h // 2:] = 1
    lab[h // 2:, : w // 3] = 2
    lab[rng.integers(0, h), :] = 255  # an ignored row
    return lab


def make_folder(root, n=4, size=(40, 48), kind="indexed", mask_suffix="", image_ext=".jpg"):
    """images/ + masks/ with ``n`` pairs; masks indexed ("P"), greyscale ("L") or RGB (with palette.json)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    labels = []
    for i in range(n):
        h, w = size
        lab = label_map(h, w, i)
        img = np.random.default_rng(100 + i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"img{i}{image_ext}")
        mpath = root / "masks" / f"img{i}{mask_suffix}.png"
        if kind == "indexed":
            im = Image.frombytes("P", (w, h), lab.astype(np.uint8).tobytes())
            im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9] * 759)
            im.save(mpath)
        elif kind == "grey":
            Image.fromarray(lab.astype(np.uint8)).save(mpath)
        else:
            table = np.zeros((256, 3), np.uint8)
            table[:3] = list(COLORS.values())
            table[255] = (0, 0, 0)
            Image.fromarray(table[lab]).save(mpath)
        labels.append(np.where(lab == 255, -1, lab))
    if kind == "rgb":
        (root / "palette.json").write_text(json.dumps({**COLORS, "void": [0, 0, 0]}))
    return labels


@pytest.mark.parametrize("kind", ["indexed", "grey", "rgb"])
def test_folder_reads_masks(tmp_path, kind):
    want = make_folder(tmp_path / "d", kind=kind)
    names = ["sky", "road", "car"] if kind != "rgb" else None  # rgb: names from palette.json
    ds = folder(tmp_path / "d", class_names=names)
    assert ds.class_names == ("sky", "road", "car") and ds.num_classes == 3
    assert ds.ids == ["img0", "img1", "img2", "img3"]
    assert [p.rsplit("/", 1)[-1] for p in ds.image_paths] == [f"img{i}.jpg" for i in range(4)]
    for got, exp in zip(ds.labels, want):
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, exp)
    assert (ds.labels[0] == -1).sum() == 48  # the 255 / void row is unknown
    if kind == "rgb":
        np.testing.assert_array_equal(ds.colors, np.array(list(COLORS.values()), np.uint8))


def test_folder_feeds_the_iccv09_pipeline(tmp_path):
    make_folder(tmp_path / "d")
    ds = folder(tmp_path / "d" / "images", tmp_path / "d" / "masks", class_names="sky,road,car")
    x, y = next(iter(make_dataset(ds.image_paths, ds.labels, ds.num_classes, (32, 64), batch_size=4)))
    assert x.shape == (4, 32, 64, 3) and y.shape == (4, 32, 64, 3)
    y = y.numpy()
    assert set(np.unique(y.sum(-1))) == {0.0, 1.0}  # ignored pixels are all-zero rows
    train, val, info = folder_datasets(tmp_path / "d", size=32, batch_size=2, val_split=0.25, augment="flip",
                                       class_names="sky,road,car")
    assert len(info["train_idx"]) == 3 and len(info["val_idx"]) == 1 and info["steps_per_epoch"] == 2
    xb, yb = next(iter(train))
    assert xb.shape == (2, 32, 32, 3) and yb.shape == (2, 32, 32, 3)


def test_classes_inferred_and_suffix_detected(tmp_path):
    make_folder(tmp_path / "d", kind="grey", mask_suffix="_mask", image_ext=".png")
    ds = folder(tmp_path / "d")
    assert ds.class_names == ("class0", "class1", "class2") and len(ds) == 4
    (tmp_path / "d" / "classes.txt").write_text("sky\nroad\ncar\n")
    assert folder(tmp_path / "d").class_names == ("sky", "road", "car")


def test_palette_text_formats(tmp_path):
    p = tmp_path / "pal.txt"
    p.write_text("# name and colour\nsky 70 130 180\n128 64 128 road\ncar #dc143c\nvoid 0 0 0\n")
    names, colors, ignore = read_palette(p)
    assert names == ["sky", "road", "car"]
    np.testing.assert_array_equal(colors, np.array(list(COLORS.values())))
    np.testing.assert_array_equal(ignore, [[0, 0, 0]])
    q = tmp_path / "pal.json"
    q.write_text(json.dumps([{"name": n, "color": list(c)} for n, c in COLORS.items()]))
    assert read_palette(q)[0] == ["sky", "road", "car"]


def _err(fn, *a, **k) -> str:
    with pytest.raises(KsegError) as exc:
        fn(*a, **k)
    return str(exc.value)


def test_unmatched_names(tmp_path):
    make_folder(tmp_path / "d")
    (tmp_path / "d" / "masks" / "img3.png").rename(tmp_path / "d" / "masks" / "other.png")
    msg = _err(folder, tmp_path / "d", class_names="a,b,c")
    assert "1 image(s) without a mask: img3.jpg" in msg and "img3.png" in msg
    (tmp_path / "d" / "images" / "img3.jpg").unlink()
    msg = _err(folder, tmp_path / "d", class_names="a,b,c")
    assert "1 mask(s) without an image: other.png" in msg


def test_size_mismatch(tmp_path):
    make_folder(tmp_path / "d")
    Image.fromarray(np.zeros((40, 47), np.uint8)).save(tmp_path / "d" / "masks" / "img2.png")
    msg = _err(folder, tmp_path / "d", class_names="a,b,c")
    assert "img2.png: mask is 47x40 (WxH) but its image img2.jpg is 48x40" in msg


def test_mask_errors(tmp_path):
    make_folder(tmp_path / "d", kind="rgb")
    (tmp_path / "d" / "palette.json").unlink()
    (tmp_path / "pal.txt").write_text("sky 70 130 180\nroad 128 64 128\ncar 220 20 60\n")  # no void colour
    msg = _err(folder, tmp_path / "d", palette=tmp_path / "pal.txt")
    assert msg.endswith("img0.png: colour (0, 0, 0) (48 pixels) is not in the palette; add it to pal.txt "
                        "(name it 'ignore' to mark unknown pixels)")
    (tmp_path / "j" / "images").mkdir(parents=True)
    (tmp_path / "j" / "masks").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "j" / "images" / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "j" / "masks" / "a.jpg")
    assert "JPEG is lossy" in _err(folder, tmp_path / "j")
    make_folder(tmp_path / "e", kind="grey")
    assert "expected images/ and masks/" in _err(folder, tmp_path / "e" / "images")


def test_train_data_format_folder(tmp_path):
    from kseg.train import main

    make_folder(tmp_path / "d", n=5, size=(40, 48), kind="rgb")
    out = tmp_path / "run"
    main(["--data-format", "folder", "--data", str(tmp_path / "d"), "--model", "unet", "--backbone", "resnet18",
          "--size", "32", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--no-export", "--verbose", "0"])
    report = json.loads((out / "metrics.json").read_text())
    assert report["val_images"] == 1 and report["train_images"] == 4
    assert len(report["confusion_matrix"]) == 3
    assert (out / "best.keras").is_file()
