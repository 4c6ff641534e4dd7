"""What the importers share: the output folder written atomically, class checks, colours, the summary."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from kseg.data.matching import IMAGE_EXTS
from kseg.data.mask_classes import MAX_CLASSES
from kseg.data.palettes import IGNORE_NAMES
from kseg.errors import KsegError

IGNORE_ID = 255
BACKGROUND_NAMES = ("background", "_background_")


def _say(msg: str) -> None:
    print(f"kseg: {msg}", file=sys.stderr)


def _is_ignore(name: str) -> bool:
    return name == "__ignore__" or name.strip().lower() in IGNORE_NAMES


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map: ``(n, 3)`` uint8, id 0 black, 1 (128, 0, 0), ..., 255 (224, 224, 192)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def _few(names, n: int = 12) -> str:
    names = list(names)
    more = f", ... and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


class _Output:
    """The output folder, built in a temporary folder beside it and renamed into place by :meth:`finish`."""

    PARTS = ("images", "masks", "classes.txt", "palette.json")

    def __init__(self, out, overwrite: bool, src: Path):
        self.out = Path(out).expanduser()
        if self.out.exists() and not self.out.is_dir():
            raise KsegError(f"{self.out}: exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()):
            if not overwrite:
                raise KsegError(f"{self.out}: exists and is not empty; choose a new folder or pass --overwrite "
                                f"(overwrite=True) to replace its images/, masks/, classes.txt and palette.json")
            src_r, out_r = Path(src).expanduser().resolve(), self.out.resolve()
            if src_r == out_r or out_r in src_r.parents:
                raise KsegError(f"{self.out}: holds the source {src}; import into another folder")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".tmp-{os.getpid()}-{self.out.name}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        (self.tmp / "images").mkdir(parents=True)
        (self.tmp / "masks").mkdir()
        self.stems: dict[str, str] = {}
        self.converted = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def add(self, stem: str, where: str, image, label: np.ndarray, palette: np.ndarray) -> None:
        """Write one image (a path to link/copy, or ``(bytes, ext)``, or a PIL image) and its label map."""
        from PIL import Image

        if stem in self.stems:
            raise KsegError(f"{where}: two images would both be named {stem!r} in the output "
                            f"(the other: {self.stems[stem]})")
        self.stems[stem] = where
        if isinstance(image, Path):
            ext = image.suffix.lower()
            if ext in IMAGE_EXTS:
                dst = self.tmp / "images" / f"{stem}{image.suffix}"
                try:
                    os.link(image, dst)
                except OSError:
                    shutil.copy2(image, dst)
            else:  # a format kseg's loader does not read (.tif, .webp): re-encoded losslessly
                with Image.open(image) as im:
                    im.convert("RGB").save(self.tmp / "images" / f"{stem}.png")
                self.converted += 1
        elif isinstance(image, tuple):
            data, ext = image
            (self.tmp / "images" / f"{stem}{ext}").write_bytes(data)
        else:
            image.convert("RGB").save(self.tmp / "images" / f"{stem}.png")
        label = np.ascontiguousarray(label, np.uint8)
        im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
        im.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
        im.save(self.tmp / "masks" / f"{stem}.png")

    def finish(self, class_names, colors) -> Path:
        """Write classes.txt and palette.json and move the folder into place."""
        names = list(class_names)
        (self.tmp / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        pal = {n: [int(v) for v in c] for n, c in zip(names, np.asarray(colors).reshape(-1, 3))}
        (self.tmp / "palette.json").write_text(json.dumps(pal, indent=1) + "\n")
        out = self.out
        if not out.exists() or not any(out.iterdir()):
            os.replace(self.tmp, out)  # a new or empty folder: one rename
            return out
        old = out / f".old-{os.getpid()}"
        old.mkdir(exist_ok=True)
        for part in self.PARTS:
            if (out / part).exists() or (out / part).is_symlink():
                os.rename(out / part, old / part)
        for part in self.PARTS:
            os.rename(self.tmp / part, out / part)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return out


def _palette(colors) -> np.ndarray:
    """A 256-entry PNG palette: the classes' colours, then VOC's colour map (255 = VOC's void colour)."""
    pal = voc_colormap()
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    pal[: len(colors)] = colors
    return pal


def _check_classes(names, where) -> None:
    if len(names) > MAX_CLASSES:
        raise KsegError(f"{where}: {len(names)} classes (with background): kseg's label maps hold at most "
                        f"{MAX_CLASSES}")
    seen = set()
    for n in names:
        if n in seen:
            raise KsegError(f"{where}: class {n!r} appears twice")
        seen.add(n)


def _summary(result: dict, src, notes: list[str]) -> dict:
    names = result["class_names"]
    print(f"kseg: imported {result['images']} images, {len(names)} classes ({_few(names)}) from {src} "
          f"into {result['out']}")
    for n in notes:
        _say(n)
    result["notes"] = list(notes)
    return result


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise KsegError(f"{path}: not a readable image ({type(err).__name__})") from None


def _stem(ident: str) -> str:
    """An output file stem for an image id that may hold sub-folders (``a/b/c.jpg`` -> ``a__b__c``)."""
    p = Path(ident.replace("\\", "/"))
    parts = [q for q in p.parent.parts if q not in ("", ".", "..", "/")] + [p.stem]
    return "__".join(parts)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KsegError(f"{path}: not a UTF-8 text file") from None
    except ValueError as err:
        raise KsegError(f"{path}: malformed JSON ({err})") from None
    except OSError as err:
        raise KsegError(f"{path}: cannot read ({err.strerror})") from None



