"""Image files: header sizes, full decode checks, and leaving out the images that do not decode."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kseg.errors import KsegError


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
