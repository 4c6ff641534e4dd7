"""kseg.data: parsing, ignore handling, nearest resize, cache, split, layout and archive checks."""

from __future__ import annotations

import io
import os
import tarfile
import time

import numpy as np
import pytest

from conftest import write_label
from kseg.data import (check_size, iccv09_datasets, load_iccv09, make_dataset, parse_label_text, repeat_factors,
                       split_indices)
from kseg.data import iccv09 as ic
from kseg.data.pipeline import IGNORE_INDEX, SizeError
from kseg.errors import KsegError


# --------------------------------------------------------------------------- parser

@pytest.mark.parametrize("text", [
    b"0 1 2\n3 -1 4\n",          # iccv09 style with -1
    b"0 1 2\n3 4 5\n",           # the even-offset fast path
    b"0 1 2\n3 4 5",             # no trailing newline
    b"  0  1 2\r\n3 -1 4 \r\n\n",  # CRLF, extra spaces, trailing blank line
    b"10 -12 7\n+3 0 134\n",      # multi-digit and signed values
])
def test_parser_matches_loadtxt(text):
    expected = np.loadtxt(io.BytesIO(text), dtype=int, ndmin=2)
    got = parse_label_text(text)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_parser_matches_loadtxt_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        arr = rng.integers(-1, 8, size=(rng.integers(1, 9), rng.integers(1, 9)))
        text = "\n".join(" ".join(map(str, r)) for r in arr).encode() + b"\n"
        np.testing.assert_array_equal(parse_label_text(text), arr)


@pytest.mark.parametrize("text,problem", [
    (b"", "empty"),
    (b"  \n\n", "empty"),
    (b"0 1 2\n3 4\n", "ragged"),
    (b"0 1\n\n2 3\n", "blank line"),
    (b"0 1.5\n", "non-integer"),
    (b"0 x\n", "non-integer"),
    (b"0 1-2\n", "non-integer"),
    (b"0 -\n", "non-integer"),
])
def test_parser_errors_name_the_file_and_problem(text, problem):
    with pytest.raises(KsegError, match=rf"some/file.txt: .*{problem}"):
        parse_label_text(text, "some/file.txt")


def test_label_values_outside_the_classes_are_an_error(tmp_path):
    p = tmp_path / "x.surfaces.txt"
    write_label(p, np.array([[0, 1], [2, 3]]))
    with pytest.raises(KsegError, match=r"x.surfaces.txt: label value 3 is outside the 3 classes"):
        ic.read_label_file(p, num_classes=3)


def test_negative_labels_become_minus_one_never_class_zero(tmp_path):
    p = tmp_path / "x.regions.txt"
    write_label(p, np.array([[-1, 0], [-3, 7]]))
    arr = ic.read_label_file(p, num_classes=8)
    assert arr.dtype == np.int8
    np.testing.assert_array_equal(arr, [[-1, 0], [-1, 7]])


# --------------------------------------------------------------------------- sizes and targets

def test_check_size():
    assert check_size(224) == (224, 224)
    assert check_size("256x320") == (256, 320)
    assert check_size((64, 96)) == (64, 96)
    with pytest.raises(SizeError, match="not a multiple of 32: use 224 or 256"):
        check_size(240)
    with pytest.raises(ValueError):  # SizeError is a ValueError too
        check_size("100")


def test_one_hot_targets_ignore_unknown_and_resize_by_nearest(tiny_iccv09):
    ds = load_iccv09(tiny_iccv09, mask="surfaces")
    # one image, upscaled: nearest resize keeps only ids present in the source, -1 stays ignored
    data = make_dataset(ds.image_paths[:1], ds.labels[:1], 3, size=(64, 96), batch_size=1)
    x, y = next(iter(data))
    assert x.shape == (1, 64, 96, 3) and y.shape == (1, 64, 96, 3)
    y = y.numpy()[0]
    assert set(np.unique(y)) <= {0.0, 1.0}
    row_sums = y.sum(-1)
    assert set(np.unique(row_sums)) == {0.0, 1.0}  # all-zero rows for unknown, one-hot elsewhere
    ignored = row_sums == 0
    assert ignored[0, 0]  # the source's top-left pixels are -1
    # exact nearest-neighbour reference (half-pixel centres, as tf.image.resize)
    src = ds.labels[0]
    rows = np.minimum(((np.arange(64) + 0.5) * src.shape[0] / 64).astype(int), src.shape[0] - 1)
    cols = np.minimum(((np.arange(96) + 0.5) * src.shape[1] / 96).astype(int), src.shape[1] - 1)
    ref = src[rows][:, cols]
    np.testing.assert_array_equal(np.where(ignored, -1, y.argmax(-1)), ref)


def test_sparse_targets_use_255_for_ignored(tiny_iccv09):
    ds = load_iccv09(tiny_iccv09, mask="surfaces")
    data = make_dataset(ds.image_paths[:2], ds.labels[:2], 3, size=(32, 32), batch_size=2, sparse=True)
    _, y = next(iter(data))
    y = y.numpy()
    assert y.shape == (2, 32, 32)
    assert set(np.unique(y)) <= {0, 1, 2, IGNORE_INDEX}
    assert (y == IGNORE_INDEX).any()


def test_images_are_raw_rgb_floats(tiny_iccv09):
    ds = load_iccv09(tiny_iccv09, mask="regions")
    x, _ = next(iter(make_dataset(ds.image_paths[:1], ds.labels[:1], 8, size=32, batch_size=1)))
    x = x.numpy()
    assert x.dtype == np.float32 and x.max() > 100 and x.min() >= 0
    # the fixture's sky is BGR (200,160,90) -> RGB (90,160,200): red < blue at the top
    assert x[0, 0, :, 0].mean() < x[0, 0, :, 2].mean()


# --------------------------------------------------------------------------- cache

def test_cache_reuse_and_stale_rebuild(tiny_iccv09, tmp_path):
    paths = sorted((tiny_iccv09 / "labels").glob("*.surfaces.txt"))
    cache = tmp_path / "c" / "surfaces.bin"
    first, stats = ic.load_labels(paths, 3, cache)
    assert stats == {"parsed": 6, "cached": 0} and cache.exists()
    again, stats = ic.load_labels(paths, 3, cache)
    assert stats == {"parsed": 0, "cached": 6}
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # change one file: only that one is parsed again, and its new content is used
    changed = np.zeros_like(first[2], dtype=np.int64)
    write_label(paths[2], changed + 1)
    st = paths[2].stat()
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    third, stats = ic.load_labels(paths, 3, cache)
    assert stats == {"parsed": 1, "cached": 5}
    assert (third[2] == 1).all()


def test_cache_of_another_version_or_corrupt_is_rebuilt(tiny_iccv09, tmp_path, monkeypatch):
    paths = sorted((tiny_iccv09 / "labels").glob("*.surfaces.txt"))
    cache = tmp_path / "surfaces.bin"
    ic.load_labels(paths, 3, cache)
    monkeypatch.setattr(ic, "CACHE_VERSION", ic.CACHE_VERSION + 1)
    _, stats = ic.load_labels(paths, 3, cache)
    assert stats["parsed"] == 6
    cache.write_bytes(b"not a cache")
    arrays, stats = ic.load_labels(paths, 3, cache)
    assert stats["parsed"] == 6 and len(arrays) == 6


def test_second_load_parses_nothing(tiny_iccv09, tmp_path, monkeypatch):
    load_iccv09(tiny_iccv09, mask="regions", cache_dir=tmp_path / "cache")
    calls = []
    monkeypatch.setattr(ic, "read_label_file", lambda *a, **k: calls.append(a))
    ds = load_iccv09(tiny_iccv09, mask="regions", cache_dir=tmp_path / "cache")
    assert calls == [] and len(ds) == 6


# --------------------------------------------------------------------------- split

def test_split_is_seeded_deterministic_and_disjoint():
    a = split_indices(715, 0.2, seed=1)
    b = split_indices(715, 0.2, seed=1)
    c = split_indices(715, 0.2, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert len(a[0]) == 572 and len(a[1]) == 143
    assert set(a[0]).isdisjoint(a[1]) and set(a[0]) | set(a[1]) == set(range(715))


def test_training_stream_is_reproducible(tiny_iccv09):
    def first_batches(seed):
        train, _, _ = iccv09_datasets(tiny_iccv09, size=32, batch_size=2, seed=seed, augment="flip")
        return [x.numpy() for x, _ in train.take(4)]

    a, b = first_batches(3), first_batches(3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_repeat_factors_follow_lvis():
    labels = [np.array([[0, 1], [0, 0]]), np.zeros((2, 2)), np.array([[0, -1]]), np.full((1, 3), -1)]
    # class 0 in 3 of 4 images, class 1 in 1 of 4, class 2 in none; the all-unknown image has no class
    np.testing.assert_allclose(repeat_factors(labels, 3, 1.0), [2.0, np.sqrt(4 / 3), np.sqrt(4 / 3), 1.0])
    np.testing.assert_allclose(repeat_factors(labels, 3, 0.25), [1.0, 1.0, 1.0, 1.0])  # nothing rarer than 25%
    np.testing.assert_allclose(repeat_factors(labels, 3, 0.0), np.ones(4))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(KsegError, match="bad repeat threshold"):
            repeat_factors(labels, 3, bad)


def _image_ids_drawn(tiny_iccv09, factors, n=480, seed=0):
    """Draw n training samples from a 6-image pipeline whose label maps are filled with each image's index."""
    ds = load_iccv09(tiny_iccv09, mask="regions")
    labels = [np.full(lab.shape, i, np.int8) for i, lab in enumerate(ds.labels)]
    stream = make_dataset(ds.image_paths, labels, 6, size=32, batch_size=8, sparse=True, training=True,
                          seed=seed, repeat=factors)
    return np.concatenate([y.numpy()[:, 0, 0] for _, y in stream.take(n // 8)])


def test_repeat_sampling_draws_rare_images_more_often(tiny_iccv09):
    plain = np.bincount(_image_ids_drawn(tiny_iccv09, None), minlength=6)
    assert plain.tolist() == [80] * 6  # 80 whole passes of the 6 images
    drawn = _image_ids_drawn(tiny_iccv09, [3, 1, 1, 1, 0, 1.5])  # a pass holds 3 + 1 + 1 + 1 + 0 + 1.5 on average
    counts = np.bincount(drawn, minlength=6) / len(drawn)
    assert counts[4] == 0  # factor 0 drops the image
    np.testing.assert_allclose(counts, np.array([3, 1, 1, 1, 0, 1.5]) / 7.5, atol=0.04)
    np.testing.assert_array_equal(drawn, _image_ids_drawn(tiny_iccv09, [3, 1, 1, 1, 0, 1.5]))  # seeded
    assert not np.array_equal(drawn, _image_ids_drawn(tiny_iccv09, [3, 1, 1, 1, 0, 1.5], seed=1))
    # copies of an image are spread through the stream, not served back to back
    assert np.mean(drawn[1:] == drawn[:-1]) < 0.3
    with pytest.raises(KsegError, match="repeat factors: need 6 finite numbers"):
        _image_ids_drawn(tiny_iccv09, [1, 1])


def test_repeat_threshold_reaches_the_training_stream(tiny_iccv09):
    _, _, info = iccv09_datasets(tiny_iccv09, mask="regions", size=32, batch_size=2, repeat_threshold=0.9)
    assert info["repeat_factors"] is not None and len(info["repeat_factors"]) == len(info["train_idx"])
    assert len(info["class_repeat_factors"]) == len(info["class_images"]) == 8
    _, _, off = iccv09_datasets(tiny_iccv09, mask="regions", size=32, batch_size=2)
    assert off["repeat_factors"] is None and off["class_repeat_factors"] is None and off["class_images"] is None


def test_flip_moves_image_and_mask_together(tiny_iccv09):
    import tensorflow as tf

    from kseg.data.augment import hflip

    img = tf.reshape(tf.range(2 * 4 * 3, dtype=tf.float32), (2, 4, 3))
    lab = tf.reshape(tf.range(8), (2, 4, 1))
    flips = 0
    for s in range(10):
        i2, l2 = hflip(img, lab, tf.constant([s, 0], tf.int64))
        same = np.array_equal(i2.numpy(), img.numpy())
        flips += not same
        assert same == np.array_equal(l2.numpy(), lab.numpy())
        if not same:
            np.testing.assert_array_equal(l2.numpy(), lab.numpy()[:, ::-1])
    assert 0 < flips < 10


# --------------------------------------------------------------------------- layout and archives

def test_missing_label_is_named(tiny_iccv09):
    (tiny_iccv09 / "labels" / "0000003.surfaces.txt").unlink()
    with pytest.raises(KsegError, match=r"0000003.surfaces.txt: missing label file for image 0000003.jpg"):
        load_iccv09(tiny_iccv09, mask="surfaces")


def test_label_without_image_is_named(tiny_iccv09):
    (tiny_iccv09 / "images" / "0000001.jpg").unlink()
    with pytest.raises(KsegError, match=r"0000001.jpg: missing image for label file"):
        load_iccv09(tiny_iccv09, mask="surfaces")


def test_label_size_mismatch_is_named(tiny_iccv09):
    write_label(tiny_iccv09 / "labels" / "0000002.surfaces.txt", np.zeros((10, 10), int))
    with pytest.raises(KsegError, match=r"0000002.surfaces.txt: label is 10x10 .* image 0000002.jpg is 48x40"):
        load_iccv09(tiny_iccv09, mask="surfaces")


def test_unknown_mask_and_missing_folder(tmp_path):
    with pytest.raises(KsegError, match="unknown mask 'layers'"):
        load_iccv09(tmp_path, mask="layers")
    with pytest.raises(KsegError, match="no such file or folder"):
        load_iccv09(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KsegError, match="empty"):
        load_iccv09(tmp_path / "empty")


def _tar(tmp_path, members):
    path = tmp_path / "iccv09Data.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_archive_is_extracted_and_reused(tiny_iccv09, tmp_path):
    archive = tmp_path / "iccv09Data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_iccv09, arcname="iccv09Data")
    out = tmp_path / "dl"
    root = ic.find_iccv09(archive, download_dir=out, quiet=True)
    assert root == out / "iccv09Data" and len(list((root / "images").iterdir())) == 6
    marker = (root / ".kseg-extracted").stat().st_mtime_ns
    time.sleep(0.01)
    assert ic.find_iccv09(archive, download_dir=out, quiet=True) == root
    assert (root / ".kseg-extracted").stat().st_mtime_ns == marker  # not extracted twice


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink"])
def test_unsafe_archives_are_refused(tmp_path, kind):
    if kind == "traversal":
        info = tarfile.TarInfo("iccv09Data/../../evil.txt")
    elif kind == "absolute":
        info = tarfile.TarInfo("/tmp/evil.txt")
    else:
        info = tarfile.TarInfo("iccv09Data/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
    data = b"x" if kind != "symlink" else None
    if data:
        info.size = 1
    path = _tar(tmp_path, [(info, data)])
    with pytest.raises(KsegError, match="refusing to extract"):
        ic.extract_archive(path, tmp_path / "out", quiet=True)
    assert not (tmp_path / "evil.txt").exists()
    assert not list((tmp_path / "out").glob("iccv09Data"))


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "iccv09Data.tar.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(KsegError, match="iccv09Data.tar.gz: not a readable .tar.gz archive"):
        ic.extract_archive(bad, tmp_path / "out", quiet=True)


@pytest.mark.e2e
def test_real_iccv09_subset_loads(real_iccv09):
    ds = load_iccv09(real_iccv09, mask="regions")
    assert len(ds) == len(list((real_iccv09 / "images").iterdir()))
    assert ds.class_names[0] == "sky" and ds.num_classes == 8
    for lab in ds.labels:
        assert lab.dtype == np.int8 and lab.min() >= -1 and lab.max() <= 7
        assert 137 <= lab.shape[0] <= 320 and 213 <= lab.shape[1] <= 320
    ref = np.loadtxt(real_iccv09 / "labels" / f"{ds.ids[0]}.regions.txt", dtype=int)
    np.testing.assert_array_equal(ds.labels[0], ref)
