"""The Stanford Background dataset (iccv09Data): find, fetch, extract, verify, parse, cache.

Layout of the official archive::

    iccv09Data/
      images/<id>.jpg
      labels/<id>.regions.txt    8 semantic classes, -1 = unknown
      labels/<id>.surfaces.txt   3 geometric classes, -1 = unknown

Label files are whitespace-separated integer matrices of the image's size.
They are parsed by a vectorised NumPy parser (:func:`parse_label_text`) and
cached as int8 arrays keyed by each source file's name, size and mtime, so a
second run parses nothing and a changed file is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

URL = "http://dags.stanford.edu/data/iccv09Data.tar.gz"
ARCHIVE_NAME = "iccv09Data.tar.gz"
FOLDER_NAME = "iccv09Data"

CLASS_NAMES = {
    "regions": ("sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object"),
    "surfaces": ("sky", "horizontal", "vertical"),
}
MASKS = tuple(CLASS_NAMES)

# Bump when the cache format or the parser's output changes: old caches are rebuilt.
CACHE_VERSION = 2


# --------------------------------------------------------------------------- finding


def _repo_candidates() -> list[Path]:
    """Default places, in order: ./data/iccv09Data, then ../shared/data/<archive>."""
    cwd = Path.cwd()
    here = Path(__file__).resolve().parents[2]  # the repository root in a source checkout
    out = []
    for base in dict.fromkeys([cwd, here]):
        out.append(base / "data" / FOLDER_NAME)
    for base in dict.fromkeys([cwd, here]):
        out.append(base.parent / "shared" / "data" / ARCHIVE_NAME)
    return out


def find_iccv09(data: str | os.PathLike | None = None, download_dir: str | os.PathLike = "data",
                download: bool = True, quiet: bool = False) -> Path:
    """Return the dataset root (the folder holding ``images/`` and ``labels/``).

    Looks at ``data`` first (a folder or a ``.tar.gz``), then ``data/iccv09Data``,
    then ``../shared/data/iccv09Data.tar.gz``; else downloads the official archive
    into ``download_dir`` (with a progress bar) and extracts it there.
    """
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise KsegError(f"{path}: no such file or folder (give --data a folder or an iccv09Data.tar.gz)")
        return _open_source(path, Path(download_dir), quiet=quiet)
    for cand in _repo_candidates():
        if cand.exists():
            return _open_source(cand, Path(download_dir), quiet=quiet)
    if not download:
        raise KsegError(f"iccv09 dataset not found in {Path(download_dir) / FOLDER_NAME} and downloading is off")
    archive = download_archive(Path(download_dir) / ARCHIVE_NAME, quiet=quiet)
    return _open_source(archive, Path(download_dir), quiet=quiet)


def _open_source(path: Path, download_dir: Path, quiet: bool = False) -> Path:
    if path.is_dir():
        root = _dataset_root(path)
        verify_layout(root)
        return root
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        target = download_dir / FOLDER_NAME
        if target.is_dir() and _is_complete(target, path):
            return target
        extract_archive(path, download_dir, quiet=quiet)
        root = _dataset_root(target)
        verify_layout(root)
        return root
    raise KsegError(f"{path}: not a folder or a .tar.gz archive")


def _dataset_root(path: Path) -> Path:
    """Accept both the iccv09Data folder and a folder that contains it."""
    if (path / "images").is_dir() or (path / "labels").is_dir():
        return path
    if (path / FOLDER_NAME).is_dir():
        return path / FOLDER_NAME
    if path.is_dir() and not any(path.iterdir()):
        raise KsegError(f"{path}: the data folder is empty (expected images/ and labels/)")
    raise KsegError(f"{path}: no images/ or labels/ folder here (is this the iccv09Data folder?)")


def _marker(target: Path) -> Path:
    return target / ".kseg-extracted"


def _is_complete(target: Path, archive: Path) -> bool:
    """True when ``target`` was fully extracted from this very archive by kseg."""
    try:
        info = json.loads(_marker(target).read_text())
    except (OSError, ValueError):
        return False
    st = archive.stat()
    return info.get("size") == st.st_size and info.get("mtime_ns") == st.st_mtime_ns


def download_archive(dest: Path, url: str = URL, quiet: bool = False) -> Path:
    """Download the official archive to ``dest`` (via a temporary name, then renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    if not quiet:
        print(f"kseg: downloading {url} -> {dest}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if not quiet:
                    _progress(done, total)
        if not quiet:
            print(file=sys.stderr)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise KsegError(f"{url}: download failed ({err}); download it by hand and pass --data PATH") from None
    os.replace(tmp, dest)
    return dest


def _progress(done: int, total: int) -> None:
    if total:
        frac = done / total
        bar = "#" * int(30 * frac)
        print(f"\r  [{bar:<30}] {done / 1e6:6.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
    else:
        print(f"\r  {done / 1e6:6.1f} MB", end="", file=sys.stderr)


def extract_archive(archive: Path, dest_dir: Path, quiet: bool = False) -> Path:
    """Extract ``archive`` into ``dest_dir`` safely.

    Refuses members that are links, devices, absolute paths or that would land
    outside ``dest_dir``. Extracts into a temporary folder first and renames it
    into place, so an interrupted extraction never looks complete.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{dest_dir}: cannot create the data folder ({err.strerror})") from None
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(archive, m, tmp)
                if not quiet:
                    print(f"kseg: extracting {archive} ({len(members)} entries) -> {dest_dir}", file=sys.stderr)
                for m in members:
                    if m.isdir():
                        (tmp / m.name).mkdir(parents=True, exist_ok=True)
                        continue
                    src = tar.extractfile(m)
                    out_path = tmp / m.name
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    with src, open(out_path, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    os.utime(out_path, (m.mtime, m.mtime))
                # a gzip stream checks its CRC and length only at its very end: read up to it, so an
                # archive cut off in its last bytes is refused too
                while tar.fileobj.read(1 << 20):
                    pass
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:
            if isinstance(err, OSError) and err.errno is not None and not isinstance(err, tarfile.TarError):
                raise KsegError(f"{archive}: cannot extract into {dest_dir} ({err.strerror or err})") from None
            raise KsegError(f"{archive}: not a readable .tar.gz archive ({err or 'truncated'})") from None
        top = tmp / FOLDER_NAME
        if not top.is_dir():
            raise KsegError(f"{archive}: the archive has no top-level {FOLDER_NAME}/ folder")
        st = archive.stat()
        _marker(top).write_text(json.dumps({"archive": str(archive), "size": st.st_size,
                                            "mtime_ns": st.st_mtime_ns}))
        target = dest_dir / FOLDER_NAME
        if target.exists():
            shutil.rmtree(target)
        os.replace(top, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_member(archive: Path, m: tarfile.TarInfo, dest: Path) -> None:
    if not (m.isfile() or m.isdir()):
        kind = "a link" if (m.issym() or m.islnk()) else "not a regular file"
        raise KsegError(f"{archive}: member {m.name!r} is {kind}; refusing to extract")
    name = m.name
    if name.startswith(("/", "\\")) or os.path.isabs(name):
        raise KsegError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    full = os.path.realpath(os.path.join(dest, name))
    if os.path.commonpath([full, os.path.realpath(dest)]) != os.path.realpath(dest):
        raise KsegError(f"{archive}: member {name!r} would land outside the target folder; refusing to extract")


# --------------------------------------------------------------------------- layout


@dataclass
class Iccv09:
    """The dataset as plain values: ids, image paths and label maps (int8, -1 = unknown).

    ``skipped`` lists the image files left out because they could not be decoded.
    """

    root: Path
    mask: str
    ids: list[str]
    image_paths: list[str]
    labels: list[np.ndarray]
    class_names: tuple[str, ...] = field(default=())
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        """One line: where the data is, how many images, the classes (not the label maps)."""
        parts = [f"root={str(self.root)!r}", f"mask={str(self.mask)!r}", f"images={len(self)}",
                 f"classes={list(self.class_names)}"]
        if hasattr(self, "binary"):  # FolderDataset
            parts.append(f"binary={self.binary}")
            colors = getattr(self, "colors", None)
            parts.append(f"colors={'None' if colors is None else len(colors)}")
        if self.skipped:
            parts.append(f"skipped={len(self.skipped)}")
        return f"{type(self).__name__}({', '.join(parts)})"


def verify_layout(root: Path, mask: str | None = None) -> list[str]:
    """Check images/ and labels/ hold matching ids; return the sorted ids.

    Raises :class:`KsegError` saying exactly what is missing.
    """
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise KsegError(f"{d}: missing folder (the iccv09 layout is images/*.jpg and labels/*.<mask>.txt)")
    image_ids = {p.stem for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")}
    if not image_ids:
        raise KsegError(f"{images_dir}: no .jpg images")
    masks = [mask] if mask else list(MASKS)
    for m in masks:
        label_ids = {p.name[: -len(f".{m}.txt")] for p in labels_dir.glob(f"*.{m}.txt")}
        if not label_ids:
            raise KsegError(f"{labels_dir}: no *.{m}.txt label files")
        missing_labels = sorted(image_ids - label_ids)
        if missing_labels:
            more = f" and {len(missing_labels) - 1} more" if len(missing_labels) > 1 else ""
            raise KsegError(f"{labels_dir / (missing_labels[0] + f'.{m}.txt')}: missing label file for image "
                            f"{missing_labels[0]}.jpg{more}")
        missing_images = sorted(label_ids - image_ids)
        if missing_images:
            more = f" and {len(missing_images) - 1} more" if len(missing_images) > 1 else ""
            raise KsegError(f"{images_dir / (missing_images[0] + '.jpg')}: missing image for label file "
                            f"{missing_images[0]}.{m}.txt{more}")
    return sorted(image_ids)


# --------------------------------------------------------------------------- parsing

_WS = np.zeros(256, bool)
_WS[[9, 10, 13, 32]] = True
_DIGIT = np.zeros(256, bool)
_DIGIT[48:58] = True
_ALLOWED = _WS | _DIGIT
_ALLOWED[[43, 45]] = True  # '+', '-'
_POW10 = 10 ** np.arange(10, dtype=np.int64)


def parse_label_text(data: bytes, source: str = "<label>") -> np.ndarray:
    """Parse a whitespace-separated integer matrix into an int64 array of shape (H, W).

    A vectorised replacement for ``np.loadtxt(path, dtype=int)``: a few NumPy
    passes over the bytes, with a faster path for the common case where every
    value is one digit, optionally negative (iccv09's labels). Raises
    :class:`KsegError` naming ``source`` for empty content, ragged rows or
    non-integer tokens.
    """
    pairs = _parse_pairs(data)
    if pairs is not None:
        return pairs.astype(np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)
    fast = _parse_single_digits(buf)
    if fast is not None:
        return fast
    return _parse_general(buf, data, source)


def _parse_pairs(data: bytes) -> np.ndarray | None:
    """Fast path for iccv09's files: int8 (H, W) if every value is one digit or -1, else None.

    In iccv09's layout, "d d d\nd d d\n", every value is one byte followed by
    one separator: one little-endian uint16 per value once each "-1" has become
    the single byte ':' ('9' + 1). A handful of whole-array integer operations
    on those uint16 then check the layout and give the values, about 6x faster
    than ``np.loadtxt(dtype=int)``. Content already holding ':' is left to the
    other parsers.
    """
    if b":" in data:  # ':' stands for "-1" below: a ':' of the content's own is left to the other parsers
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    if b"-" in data:
        minus = np.flatnonzero(buf == 45)
        buf = np.delete(buf, minus)  # a copy; the byte after each '-' moves to minus - (number of '-' before it)
        after = minus - np.arange(minus.size)
        if after[-1] >= buf.size or (buf[after] != 49).any():
            return None  # a sign before anything but a '1'
        buf[after] = 58
    if buf.size < 2 or buf.size % 2 or buf[-1] != 10:
        return None
    x = buf.view("<u2") - np.uint16(0x0A30)  # "d\n" -> d, "d " -> 0x1600 + d ('0' = 0x30, ' ' - '\n' = 0x16)
    hi = x >> 8
    lo = (x & np.uint16(255)).astype(np.int8)
    ends = np.flatnonzero(hi == 0)
    if ends.size == 0:
        return None
    width = int(ends[0]) + 1
    if (ends.size * width != x.size or not (ends == np.arange(width - 1, x.size, width)).all()
            or not ((hi == 0x16) | (hi == 0)).all() or not (lo.view(np.uint8) <= 10).all()):
        return None
    lo[lo == 10] = -1
    return lo.reshape(ends.size, width)


def _parse_single_digits(buf: np.ndarray) -> np.ndarray | None:
    """Fast path: every token is ``d`` or ``-d``, rows end in newlines; else None."""
    if buf.size < 2 or buf[-1] != 10:
        return None
    dig = buf >= 48
    if (buf > 57).any() or (dig[1:] & dig[:-1]).any():
        return None  # a letter or a multi-digit value: take the general path
    pos = np.flatnonzero(dig)
    if pos.size == 0:
        return None
    minus = buf == 45
    n_minus = int(np.count_nonzero(minus))
    before = buf[pos - 1] if pos[0] > 0 else np.concatenate(([32], buf[pos[1:] - 1]))
    neg = before == 45
    if n_minus != int(np.count_nonzero(neg)):
        return None  # a sign not directly before a digit
    if n_minus:
        mpos = pos[neg] - 1
        if mpos[0] > 0 and (~_WS[buf[mpos[mpos > 0] - 1]]).any() or (mpos == 0).sum() > 1:
            return None  # '5-3' and friends
    other = ~(dig | minus | _WS[buf])
    if other.any():
        return None
    nl = np.flatnonzero(buf == 10)
    per_row = np.diff(np.searchsorted(pos, nl, side="right"), prepend=0)
    if per_row.size == 0 or per_row[0] == 0 or (per_row != per_row[0]).any():
        return None  # blank or ragged lines: let the general parser report them
    vals = buf[pos].astype(np.int64) - 48
    vals[neg] = -vals[neg]
    return vals.reshape(per_row.size, per_row[0])


def _parse_general(buf: np.ndarray, data: bytes, source: str) -> np.ndarray:
    if buf.size == 0 or not (~_WS[buf]).any():
        raise KsegError(f"{source}: empty label file")
    bad = ~_ALLOWED[buf]
    if bad.any():
        pos = int(np.argmax(bad))
        line = int(np.count_nonzero(buf[:pos] == 10)) + 1
        raise KsegError(f"{source}: line {line}: non-integer token near {data[max(0, pos - 5):pos + 5]!r}")
    tok = ~_WS[buf]
    prev = np.concatenate(([False], tok[:-1]))
    nxt = np.concatenate((tok[1:], [False]))
    starts = np.flatnonzero(tok & ~prev)
    ends = np.flatnonzero(tok & ~nxt)  # inclusive
    # signs may only open a token, and must be followed by a digit
    sign = (buf == 45) | (buf == 43)
    if sign.any():
        sign_pos = np.flatnonzero(sign)
        ok = np.isin(sign_pos, starts) & ~np.isin(sign_pos, ends)
        if not ok.all():
            pos = int(sign_pos[np.argmin(ok)])
            line = int(np.count_nonzero(buf[:pos] == 10)) + 1
            raise KsegError(f"{source}: line {line}: non-integer token near {data[max(0, pos - 5):pos + 5]!r}")
    neg = buf[starts] == 45
    digit_starts = starts + sign[starts]
    ndig = ends - digit_starts + 1
    if ndig.max() > 9:
        raise KsegError(f"{source}: a value has more than 9 digits")
    # value of each token: sum of digit * 10**(distance to token end)
    digit_pos = np.flatnonzero(_DIGIT[buf])
    tok_of_digit = np.searchsorted(starts, digit_pos, side="right") - 1
    contrib = (buf[digit_pos].astype(np.int64) - 48) * _POW10[ends[tok_of_digit] - digit_pos]
    values = np.add.reduceat(contrib, np.searchsorted(tok_of_digit, np.arange(len(starts))))
    values = np.where(neg, -values, values)
    # row structure: tokens per line; blank lines only allowed at the end
    newline_before = np.cumsum(buf == 10)
    line_of_tok = newline_before[starts]
    counts = np.bincount(line_of_tok)
    nonblank = np.flatnonzero(counts)
    if nonblank[-1] + 1 != len(nonblank):
        first_blank = int(np.flatnonzero(counts == 0)[0]) + 1
        raise KsegError(f"{source}: line {first_blank}: blank line inside the matrix")
    width = counts[0]
    if (counts != width).any():
        row = int(np.flatnonzero(counts != width)[0])
        raise KsegError(f"{source}: ragged rows: line {row + 1} has {counts[row]} values, line 1 has {width}")
    return values.reshape(len(counts), width)


def read_label_file(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read one label file as int8 (-1 = unknown); values must be < ``num_classes``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KsegError(f"{path}: cannot read label file ({err.strerror})") from None
    arr = _parse_pairs(data)
    if arr is None:
        arr = np.maximum(parse_label_text(data, str(path)), -1).astype(np.int8)
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise KsegError(f"{path}: label value {int(arr.max())} is outside the {num_classes} classes "
                        f"(0..{num_classes - 1}, negative = unknown)")
    return arr


# --------------------------------------------------------------------------- cache


def default_cache_dir(root: Path) -> Path:
    base = Path(os.environ.get("KSEG_CACHE_DIR", Path.home() / ".cache" / "kseg"))
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return base / f"iccv09-{digest}"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}|{st.st_size}|{st.st_mtime_ns}"


def load_labels(paths: list[Path], num_classes: int, cache_file: Path | None) -> tuple[list[np.ndarray], dict]:
    """Load label files through a cache of int8 arrays keyed by (name, size, mtime).

    Returns the arrays and stats ``{"parsed": n, "cached": m}``. Entries whose
    source changed are parsed again; a cache of another version, or an
    unreadable one, is rebuilt. The cache is written under a temporary name and
    renamed, so a kill never leaves a half-written cache.
    """
    keys = [_file_key(p) for p in paths]
    cached: dict[str, np.ndarray] = {}
    if cache_file is not None and cache_file.exists():
        cached = _read_cache(cache_file)
    missing = [i for i, k in enumerate(keys) if k not in cached]
    # one thread: the parser is a few short NumPy passes per file, and a thread pool measured slower (GIL)
    fresh = {i: read_label_file(paths[i], num_classes) for i in missing}
    out = [fresh[i] if i in fresh else cached[k] for i, k in enumerate(keys)]
    parsed = len(missing)
    if cache_file is not None and (parsed or len(cached) != len(keys)):
        _write_cache(cache_file, keys, out)
    return out, {"parsed": parsed, "cached": len(paths) - parsed}


_MAGIC = b"KSEGLBL\0"


def _kseg_version() -> str:
    """The kseg version that writes (and alone trusts) a label cache."""
    import kseg

    return kseg.__version__


def _read_cache(cache_file: Path) -> dict[str, np.ndarray]:
    """Entries of a label cache file; {} for a missing, foreign, damaged or other-version file."""
    try:
        data = cache_file.read_bytes()
        if data[:8] != _MAGIC:
            return {}
        hlen = int.from_bytes(data[8:16], "little")
        header = json.loads(data[16:16 + hlen])
        if header.get("version") != CACHE_VERSION or header.get("kseg") != _kseg_version():
            return {}
        keys, offsets, shapes = header["keys"], header["offsets"], header["shapes"]
        flat = np.frombuffer(data, dtype=np.int8, offset=16 + hlen)
    except (OSError, ValueError, KeyError, TypeError):  # a broken cache is rebuilt, never trusted
        return {}
    if len(offsets) != len(keys) + 1 or len(shapes) != len(keys) or offsets[-1] != flat.size:
        return {}
    try:
        return {k: flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i, k in enumerate(keys)}
    except ValueError:
        return {}


def _write_cache(cache_file: Path, keys: list[str], arrays: list[np.ndarray]) -> None:
    """Write the cache under a temporary name, then rename it into place."""
    tmp = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(int).tolist()
        header = json.dumps({"version": CACHE_VERSION, "kseg": _kseg_version(), "keys": keys, "offsets": offsets,
                             "shapes": [list(a.shape) for a in arrays]}).encode()
        fd, tmp = tempfile.mkstemp(prefix=cache_file.name + ".", suffix=".tmp", dir=cache_file.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + len(header).to_bytes(8, "little") + header)
            for a in arrays:
                f.write(memoryview(np.ascontiguousarray(a, dtype=np.int8)).cast("B"))
        os.replace(tmp, cache_file)
    except OSError as err:  # a cache we cannot write only costs time next run
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        print(f"kseg: warning: {cache_file}: cannot write label cache ({err.strerror})", file=sys.stderr)


# --------------------------------------------------------------------------- loading


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise KsegError(f"{path}: not a readable image ({type(err).__name__})") from None
    return h, w


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file that decodes completely; :class:`KsegError` otherwise.

    Decodes the whole file (a JPEG cut short or with damaged data has a good
    header but fails in the training pipeline's decoder).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            im.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise KsegError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    return h, w


def skip_unreadable(image_paths, *others, kind: str = "image"):
    """Drop the images that do not decode, warning once per file naming it.

    Returns ``(sizes, skipped, kept_image_paths, *kept_others)``: ``sizes`` are the
    kept images' (H, W), ``skipped`` the left-out paths, ``others`` lists
    parallel to ``image_paths`` filtered the same way. Raises :class:`KsegError`
    when no image is left.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(img):
        try:
            return check_image(img)
        except KsegError as err:
            return err

    # decoding releases the GIL: check on all cores
    with ThreadPoolExecutor(max(1, min(len(image_paths), os.cpu_count() or 1, 8))) as pool:
        results = list(pool.map(check, image_paths))
    keep, sizes, skipped = [], [], []
    for i, (img, res) in enumerate(zip(image_paths, results)):
        if isinstance(res, KsegError):
            print(f"kseg: warning: {res}; skipping this {kind}", file=sys.stderr)
            skipped.append(str(img))
        else:
            sizes.append(res)
            keep.append(i)
    if not keep:
        raise KsegError(f"{Path(image_paths[0]).parent if image_paths else '?'}: none of the "
                        f"{len(image_paths)} images could be read")
    pick = lambda seq: [seq[i] for i in keep]  # noqa: E731
    return (sizes, skipped, pick(list(image_paths)), *(pick(list(o)) for o in others))


def load_iccv09(data: str | os.PathLike | None = None, mask: str = "surfaces",
                cache_dir: str | os.PathLike | None = None, limit: int | None = None,
                quiet: bool = True, check_sizes: bool = True) -> Iccv09:
    """Find the dataset and load ``mask`` labels (``"regions"`` or ``"surfaces"``).

    ``data``: a folder or archive (see :func:`find_iccv09`). ``limit``: keep only
    the first N ids (sorted), for quick experiments and tests. Labels are int8
    arrays at the image's own size with -1 for unknown pixels.
    """
    if mask not in CLASS_NAMES:
        raise KsegError(f"unknown mask {mask!r}: choose one of {', '.join(MASKS)}")
    root = find_iccv09(data, quiet=quiet)
    ids = verify_layout(root, mask)
    if limit is not None:
        ids = ids[: int(limit)]
    image_paths = [str(root / "images" / f"{i}.jpg") for i in ids]
    label_paths = [root / "labels" / f"{i}.{mask}.txt" for i in ids]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    cache_file = cache / f"{mask}-labels.bin" if limit is None else cache / f"{mask}-labels-{limit}.bin"
    labels, _ = load_labels(label_paths, len(CLASS_NAMES[mask]), cache_file)
    skipped = []
    if check_sizes:
        # an image that does not decode is left out (with a warning naming it), not a crash mid-training
        sizes, skipped, image_paths, labels, label_paths, ids = skip_unreadable(image_paths, labels,
                                                                                 label_paths, ids)
        for hw, img, lab, lp in zip(sizes, image_paths, labels, label_paths):
            if tuple(lab.shape) != hw:
                raise KsegError(f"{lp}: label is {lab.shape[1]}x{lab.shape[0]} (WxH) but its image "
                                f"{Path(img).name} is {hw[1]}x{hw[0]}")
    return Iccv09(root=root, mask=mask, ids=ids, image_paths=image_paths, labels=labels,
                  class_names=CLASS_NAMES[mask], skipped=skipped)
