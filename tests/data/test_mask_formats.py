"""Mask formats, binary detection, inferred palettes and the loader's warnings (kseg.data.folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kseg.data import folder, folder_datasets, read_mask
from kseg.errors import KsegError

H, W = 24, 32
RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def shapes(i: int) -> np.ndarray:
    """A label map with classes 0, 1, 2 (a block of 1 and a stripe of 2, moving with i)."""
    lab = np.zeros((H, W), np.uint8)
    lab[4:16, 3 + i:15 + i] = 1
    lab[18:, :] = 2
    return lab


def binary_shapes(i: int) -> np.ndarray:
    return (shapes(i) == 1).astype(np.uint8)


def indexed(lab: np.ndarray, colours) -> Image.Image:
    im = Image.frombytes("P", (lab.shape[1], lab.shape[0]), lab.astype(np.uint8).tobytes())
    pal = [v for c in colours for v in c]
    im.putpalette(pal + [0] * (768 - len(pal)))
    return im


def write(root, masks, classes=None, palette=None):
    """images/img<i>.png (grey) and masks/img<i>.png for each mask (an array or a PIL image)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        im = m if isinstance(m, Image.Image) else Image.fromarray(m)
        Image.fromarray(np.full((im.size[1], im.size[0], 3), 90, np.uint8)).save(root / "images" / f"img{i}.png")
        im.save(root / "masks" / f"img{i}.png")
    if classes is not None:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    if palette is not None:
        (root / "palette.json").write_text(json.dumps(palette))
    return root


def lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("kseg:")]


def err(fn, *a, **k) -> str:
    with pytest.raises(KsegError) as exc:
        fn(*a, **k)
    return str(exc.value)


# --------------------------------------------------------------------------- the same masks in every format


def _binary_as(fmt: str, lab: np.ndarray):
    if fmt == "L 0/255":
        return lab * 255
    if fmt == "L 0/1":
        return lab
    if fmt == "L 0/128":
        return lab * 128
    if fmt == "P":
        return indexed(lab, [(0, 0, 0), RED])
    if fmt == "1-bit":
        return Image.fromarray(lab.astype(bool))
    if fmt == "16-bit":
        return Image.fromarray(lab.astype(np.uint16) * 65535)
    if fmt == "RGB grey":
        return np.repeat((lab * 255)[..., None], 3, -1)
    if fmt in ("RGB palette", "RGB"):
        return np.array([(0, 0, 0), RED], np.uint8)[lab]
    if fmt == "RGBA":  # background fully transparent (with a colour that must not matter)
        rgba = np.zeros(lab.shape + (4,), np.uint8)
        rgba[lab == 0] = (255, 255, 255, 0)
        rgba[lab == 1] = RED + (255,)
        return Image.fromarray(rgba, "RGBA")
    raise AssertionError(fmt)


BINARY_FORMATS = {
    "L 0/255": ("masks hold two values {0, 255}: binary segmentation (255 = foreground, 0 = background)", None),
    "L 0/1": ("masks hold two values {0, 1}: binary segmentation (1 = foreground, 0 = background)", None),
    "L 0/128": ("masks hold two values {0, 128}: binary segmentation (128 = foreground, 0 = background)", None),
    "P": ("masks hold two values {0, 1}: binary segmentation (1 = foreground, 0 = background)", [(0, 0, 0), RED]),
    "1-bit": ("masks hold two values {0, 1}: binary segmentation (1 = foreground, 0 = background)", None),
    "16-bit": ("masks hold two values {0, 65535}: binary segmentation (65535 = foreground, 0 = background)",
               None),
    "RGB grey": ("masks hold two values {0, 255}: binary segmentation (255 = foreground, 0 = background)", None),
    "RGB palette": ("two classes from palette.json: binary segmentation (1 = foreground 'crack', 0 = background "
                    "'road')", [(0, 0, 0), RED]),
    "RGB": (None, [(0, 0, 0), RED]),
    "RGBA": (None, [(0, 0, 0), RED]),
}


@pytest.mark.parametrize("fmt", list(BINARY_FORMATS))
def test_binary_masks_in_every_format_give_the_same_labels(tmp_path, capsys, fmt):
    labs = [binary_shapes(i) for i in range(3)]
    pal = {"road": [0, 0, 0], "crack": list(RED)} if fmt == "RGB palette" else None
    ds = folder(write(tmp_path / "d", [_binary_as(fmt, lab) for lab in labs], palette=pal))
    assert ds.binary is True and ds.num_classes == 2
    assert ds.class_names == (("road", "crack") if fmt == "RGB palette" else ("background", "foreground"))
    for got, want in zip(ds.labels, labs):
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)
    say, colours = BINARY_FORMATS[fmt]
    if say is None:  # RGB(A) without a palette file: the colours found, black first
        fg = int((np.stack(labs) == 1).sum())
        say = (f"RGB masks without a palette file: 2 colours, taken as classes in colour order: "
               f"0 (0, 0, 0) {3 * H * W - fg} pixels, 1 (200, 30, 30) {fg} pixels; "
               f"binary segmentation (1 = foreground, 0 = background); name them in palette.json")
    out = lines(capsys)
    assert f"kseg: {say}" in out and say in ds.notes
    if fmt == "P":
        msg = "indexed PNG masks and no palette file: drawing the classes in the masks' own palette colours"
        assert ds.notes == [say, msg] and out == [f"kseg: {n}" for n in ds.notes]
    else:
        assert ds.notes == [say] and out == [f"kseg: {say}"]
    if colours is None:
        assert ds.colors is None
    else:
        np.testing.assert_array_equal(ds.colors, np.array(colours, np.uint8))


MULTI_FORMATS = ["L", "P", "16-bit", "RGB palette", "RGB"]


@pytest.mark.parametrize("fmt", MULTI_FORMATS)
def test_multiclass_masks_in_every_format_give_the_same_labels(tmp_path, capsys, fmt):
    labs = [shapes(i) for i in range(3)]
    if fmt != "RGB":  # an unknown pixel (255 / the void colour) in each mask; RGB without a palette has no void
        for i, lab in enumerate(labs):
            lab[0, i] = 255
    colours = np.array([RED, GREEN, BLUE] + [(0, 0, 0)] * 252 + [(255, 255, 255)], np.uint8)
    if fmt == "L":
        masks = labs
    elif fmt == "P":
        masks = [indexed(lab, colours) for lab in labs]
    elif fmt == "16-bit":
        masks = [Image.fromarray(lab.astype(np.uint16)) for lab in labs]
    elif fmt == "RGB":  # without a palette file the classes are in colour order: BLUE < GREEN < RED
        masks = [np.array([BLUE, GREEN, RED], np.uint8)[lab] for lab in labs]
    else:
        masks = [colours[lab] for lab in labs]
    pal = {"sky": list(RED), "road": list(GREEN), "car": list(BLUE), "void": [255, 255, 255]}
    ds = folder(write(tmp_path / "d", masks, classes=["sky", "road", "car"] if fmt != "RGB palette" else None,
                      palette=pal if fmt == "RGB palette" else None))
    for got, lab in zip(ds.labels, labs):
        np.testing.assert_array_equal(got, np.where(lab == 255, -1, lab.astype(int)))
    assert ds.binary is False and ds.num_classes == 3
    out = lines(capsys)
    if fmt == "RGB":
        assert ds.class_names == ("sky", "road", "car")  # classes.txt names the colours in colour order
        np.testing.assert_array_equal(ds.colors, np.array([BLUE, GREEN, RED], np.uint8))
        n = [int((np.stack(labs) == c).sum()) for c in range(3)]
        assert out == [f"kseg: RGB masks without a palette file: 3 colours, taken as classes in colour order: "
                       f"0 (30, 30, 200) {n[0]} pixels, 1 (30, 200, 30) {n[1]} pixels, 2 (200, 30, 30) {n[2]} pixels; "
                       f"named from classes.txt"]
        return
    assert ds.class_names == ("sky", "road", "car")
    src = "palette.json" if fmt == "RGB palette" else "classes.txt"
    assert out[0] == f"kseg: 3 classes from {src}: sky, road, car"
    if fmt in ("P", "RGB palette"):
        np.testing.assert_array_equal(ds.colors, np.array([RED, GREEN, BLUE], np.uint8))
    else:
        assert ds.colors is None
    if fmt == "P":
        assert out[1] == ("kseg: indexed PNG masks and no palette file: drawing the classes in the masks' own "
                          "palette colours")
    assert len(out) == (2 if fmt == "P" else 1)


# --------------------------------------------------------------------------- binary detection


def test_binary_with_an_ignore_value(tmp_path, capsys):
    labs = [binary_shapes(i) for i in range(2)]
    labs[1][0, :4] = 255
    ds = folder(write(tmp_path / "d", labs))
    assert ds.binary and (ds.labels[1] == -1).sum() == 4 and (ds.labels[1] == 1).sum() == (labs[1] == 1).sum()
    assert lines(capsys) == ["kseg: masks hold two values {0, 1} and 255 = unknown: binary segmentation "
                             "(1 = foreground, 0 = background)"]


def test_binary_true_and_false(tmp_path, capsys):
    d = write(tmp_path / "d", [binary_shapes(i) * 255 for i in range(2)])
    msg = err(folder, d, binary=False)
    assert msg == (f"{d / 'masks'}: every mask pixel is 0 (and 255 = unknown; 0/255 masks are binary: "
                   f"drop --no-binary): one class, nothing to learn")
    e = write(tmp_path / "e", [binary_shapes(0), binary_shapes(1)])
    ds = folder(e, binary=False)
    assert ds.binary is False and ds.class_names == ("class0", "class1")
    assert lines(capsys) == ["kseg: masks hold class ids 0, 1 and there is no classes.txt: 2 classes named "
                             "class0..class1"]
    three = write(tmp_path / "f", [shapes(0), binary_shapes(1)])
    msg = err(folder, three, binary=True)
    assert msg == (f"{three / 'masks' / 'img0.png'}: value 2 besides 0 and 1: binary masks hold 0 (background) "
                   f"and one foreground value (255 = unknown); drop --binary for multi-class masks")
    assert folder(three, quiet=True).num_classes == 3  # detection: three values are not binary
    (three / "classes.txt").write_text("a\nb\nc\n")
    assert err(folder, three, binary=True) == ("binary segmentation needs 2 classes (background, foreground) "
                                               "but classes.txt names 3 classes: a, b, c")


def test_two_class_names_make_a_binary_dataset(tmp_path, capsys):
    d = write(tmp_path / "d", [binary_shapes(i) for i in range(2)], classes=["sky", "ground"])
    ds = folder(d)
    assert ds.binary is True and ds.class_names == ("sky", "ground")
    assert lines(capsys) == ["kseg: masks hold two values {0, 1}: binary segmentation (1 = foreground 'ground', "
                             "0 = background 'sky')"]
    e = write(tmp_path / "e", [binary_shapes(i) * 255 for i in range(2)], classes=["road", "crack"])
    ds = folder(e)
    assert ds.binary and (ds.labels[0] == 1).sum() == (binary_shapes(0) == 1).sum()
    assert lines(capsys) == ["kseg: masks hold two values {0, 255}: binary segmentation (255 = foreground 'crack', "
                             "0 = background 'road')"]
    assert folder(e, binary=False, quiet=True).binary is False
    one = folder(e, class_names="crack", quiet=True)  # one name: the foreground's
    assert one.class_names == ("background", "crack") and one.binary
    msg = err(folder, write(tmp_path / "f", [shapes(0)]), class_names="thing")
    assert msg == ("1 class name was given: thing; one class is nothing to learn: name every class, the "
                   "background too")


def test_two_named_classes_with_a_stray_id_are_binary(tmp_path, capsys):
    labs = [binary_shapes(i) for i in range(2)]
    labs[0][0, :3] = 2
    ds = folder(write(tmp_path / "d", labs, classes=["bg", "fg"]))
    assert ds.binary and (ds.labels[0] == -1).sum() == 3
    assert lines(capsys) == [
        "kseg: warning: class id 2 is beyond the 2 classes in classes.txt (0..1), in img0.png: its 3 pixels are "
        "treated as unknown",
        "kseg: two classes from classes.txt: binary segmentation (1 = foreground 'fg', 0 = background 'bg')"]


def test_one_value_everywhere_is_an_error(tmp_path):
    d = write(tmp_path / "d", [np.zeros((H, W), np.uint8)] * 2)
    assert err(folder, d) == f"{d / 'masks'}: every mask pixel is 0: one class, nothing to learn"
    e = write(tmp_path / "e", [np.full((H, W), 3, np.uint8)] * 2)
    assert err(folder, e, binary=True) == f"{e / 'masks'}: every mask pixel is 3: one class, nothing to learn"
    f = write(tmp_path / "f", [np.full((H, W, 3), RED, np.uint8)])
    assert err(folder, f) == f"{f / 'masks'}: every mask pixel is colour (200, 30, 30): one class, nothing to learn"
    g = write(tmp_path / "g", [np.full((H, W), 255, np.uint8)])
    assert err(folder, g) == f"{g / 'masks'}: every mask pixel is unknown (255)"


# --------------------------------------------------------------------------- palettes


def test_indexed_masks_with_kseg_colours_when_their_palette_is_grey(tmp_path, capsys):
    ramp = [(v, v, v) for v in range(256)]
    labs = [shapes(i) for i in range(2)]
    labs[0][0, 0] = 255
    ds = folder(write(tmp_path / "d", [indexed(lab, ramp) for lab in labs]))
    assert ds.colors is None and ds.num_classes == 3 and ds.labels[0][0, 0] == -1
    assert lines(capsys) == ["kseg: masks hold class ids 0..2 (255 = unknown) and there is no classes.txt: "
                             "3 classes named class0..class2"]
    # a palette file wins over the embedded palette
    pal = {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]}
    ds = folder(write(tmp_path / "e", [indexed(shapes(i), [RED, GREEN, BLUE]) for i in range(2)], palette=pal))
    np.testing.assert_array_equal(ds.colors, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert lines(capsys) == ["kseg: 3 classes from palette.json: a, b, c"]


def test_rgb_without_palette_names_from_classes_txt(tmp_path, capsys):
    masks = [np.array([(0, 0, 0), RED, GREEN], np.uint8)[shapes(i)] for i in range(2)]
    d = write(tmp_path / "d", masks, classes=["bg", "x", "y"])
    ds = folder(d)
    assert ds.class_names == ("bg", "x", "y")
    np.testing.assert_array_equal(ds.colors, [(0, 0, 0), GREEN, RED])  # colour order
    out = lines(capsys)
    assert out[0].startswith("kseg: RGB masks without a palette file: 3 colours, taken as classes in colour "
                             "order: 0 (0, 0, 0) ") and out[0].endswith("; named from classes.txt")
    (d / "classes.txt").write_text("bg\nx\n")
    assert err(folder, d) == (f"{d / 'masks'}: the RGB masks hold 3 colours but classes.txt names 2 classes: bg, x: "
                              f"map each colour to its class in palette.json")


def test_rgb_with_too_many_colours(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.array([(0, 0, 0), RED], np.uint8)[binary_shapes(0)]
    noisy = np.clip(smooth.astype(int) + rng.integers(-3, 4, smooth.shape), 0, 255).astype(np.uint8)
    d = write(tmp_path / "d", [smooth, noisy])
    n = len(np.unique(noisy.reshape(-1, 3), axis=0))
    msg = err(folder, d)
    assert msg.startswith(f"{d / 'masks' / 'img1.png'}: {n} colours in this mask (")
    assert msg.endswith("in all the masks) and no palette file: a JPEG-saved or anti-aliased mask? save masks "
                        "with exact class colours (PNG, no smoothing), or list the class colours in palette.json")


def test_mixed_rgb_and_id_masks(tmp_path):
    d = write(tmp_path / "d", [np.array([(0, 0, 0), RED], np.uint8)[binary_shapes(0)], binary_shapes(1)])
    assert err(folder, d) == (f"{d / 'masks'}: img0.png is a colour (RGB) mask but img1.png holds class ids "
                              f"(indexed/greyscale): save all masks the same way, or map the colours to classes "
                              f"in palette.json")


def test_read_mask_messages_name_real_files_and_options(tmp_path):
    Image.fromarray(np.array([(0, 0, 0), RED], np.uint8)[binary_shapes(0)]).save(tmp_path / "m.png")
    msg = err(read_mask, tmp_path / "m.png")
    assert msg == (f"{tmp_path / 'm.png'}: an RGB mask needs a palette: write palette.json (or palette.txt) in the "
                   f"dataset folder (or pass --palette), or save masks as indexed/greyscale PNGs")
    lab = read_mask(tmp_path / "m.png", colors=[(0, 0, 0), RED])
    np.testing.assert_array_equal(lab, binary_shapes(0))
    Image.fromarray(shapes(0)).save(tmp_path / "g.png")
    assert "class id 2 is outside the 2 classes (0..1, 255 = unknown)" in err(read_mask, tmp_path / "g.png", 2)


def test_16bit_ids_beyond_the_label_range(tmp_path):
    labs = [shapes(i).astype(np.uint16) for i in range(2)]
    labs[1][0, 0] = 300
    d = write(tmp_path / "d", [Image.fromarray(lab) for lab in labs])
    assert err(folder, d) == (f"{d / 'masks'}: class id 300: kseg's label maps hold at most 127 classes "
                              f"(is 255 the ignore value? pass --ignore-index)")


# --------------------------------------------------------------------------- warnings


def _with_seven(n=3):
    labs = [shapes(0) for _ in range(n)]
    labs[1][2:7, 2:7] = 7
    return labs


def test_a_stray_id_without_class_names_is_told(tmp_path, capsys):
    ds = folder(write(tmp_path / "d", _with_seven()))
    assert ds.num_classes == 8
    want = [
        "kseg: masks hold class ids 0..2, 7 and there is no classes.txt: 8 classes named class0..class7",
        "kseg: warning: class ids 3..6 never appear in the masks, yet count as classes: 4 of the 8 classes are "
        "empty; list the real classes in classes.txt (one name a line; ids beyond them become unknown)",
        "kseg: warning: class 7 has only 25 pixels in all the masks, in img1.png: too few to learn; list the real "
        "classes in classes.txt (one name a line), or mark it unknown with --ignore-index 7"]
    assert lines(capsys) == want
    assert ds.notes == [ln[len("kseg: "):] for ln in want]


def test_a_stray_id_beyond_classes_txt_becomes_unknown(tmp_path, capsys):
    labs = _with_seven(5)
    for i in (2, 3, 4):
        labs[i][0, 0] = 9
    ds = folder(write(tmp_path / "d", labs, classes=["sky", "road", "car"]))
    assert ds.num_classes == 3 and (ds.labels[1] == -1).sum() == 25
    assert ds.labels[1].max() == 2
    assert lines(capsys) == [
        "kseg: 3 classes from classes.txt: sky, road, car",
        "kseg: warning: class ids 7, 9 are beyond the 3 classes in classes.txt (0..2), in img1.png, img2.png, "
        "img3.png and 1 more: their 28 pixels are treated as unknown"]


def test_named_classes_missing_or_rare(tmp_path, capsys):
    labs = [np.zeros((H, W), np.uint8) for _ in range(3)]
    for lab in labs:
        lab[12:] = 1
    labs[2][0, :10] = 2
    ds = folder(write(tmp_path / "d", labs), class_names="sky,road,car,bus", quiet=True)
    assert ds.notes == ["warning: class 'bus' (3) never appears in the masks",
                        "warning: class 'car' (2) has only 10 pixels in all the masks, in img2.png: too few to "
                        "learn; check those masks"]
    assert lines(capsys) == []  # quiet: notes only


def test_folder_datasets_passes_binary_and_quiet(tmp_path, capsys):
    d = write(tmp_path / "d", [binary_shapes(i) * 255 for i in range(4)])
    _, _, info = folder_datasets(d, size=32, batch_size=2, val_split=0.25, quiet=True)
    assert info["dataset"].binary is True and lines(capsys) == []
    with pytest.raises(KsegError, match="drop --no-binary"):
        folder_datasets(d, size=32, batch_size=2, binary=False)


def test_factorize_agrees_with_unique():
    from kseg.data.folder import _factorize

    rng = np.random.default_rng(1)
    for values in (rng.integers(0, 3, (60, 70)), rng.integers(0, 70000, (60, 70)), np.zeros((5, 5), np.int64)):
        values = values.copy()
        values[2, 3] = 99_999  # one pixel that a sample misses
        keys, counts, idx = _factorize(values)
        want_keys, want_counts = np.unique(values, return_counts=True)
        np.testing.assert_array_equal(keys, want_keys)
        np.testing.assert_array_equal(counts, want_counts)
        np.testing.assert_array_equal(keys[idx], values)
