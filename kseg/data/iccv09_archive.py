"""The Stanford Background archive (iccv09Data): find, download, extract safely, verify the layout.

Layout of the official archive::

    iccv09Data/
      images/<id>.jpg
      labels/<id>.regions.txt    8 semantic classes, -1 = unknown
      labels/<id>.surfaces.txt   3 geometric classes, -1 = unknown

:mod:`kseg.data.iccv09` loads the dataset from the folder found here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

from kseg.errors import KsegError

URL = "http://dags.stanford.edu/data/iccv09Data.tar.gz"
ARCHIVE_NAME = "iccv09Data.tar.gz"
FOLDER_NAME = "iccv09Data"

CLASS_NAMES = {
    "regions": ("sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object"),
    "surfaces": ("sky", "horizontal", "vertical"),
}
MASKS = tuple(CLASS_NAMES)


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
