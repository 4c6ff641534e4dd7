"""Pairing images with masks by file name."""

from __future__ import annotations

from pathlib import Path

from kseg.errors import KsegError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
MASK_EXTS = (".png", ".bmp", ".gif", ".tif", ".tiff")
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "-mask", "_seg", "_segmentation")


def _list(folder: Path, exts) -> dict[str, Path]:
    if not folder.is_dir():
        raise KsegError(f"{folder}: no such folder")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts}


def _few(names, n=3) -> str:
    names = sorted(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def match_files(images_dir, masks_dir, mask_suffix: str | None = None) -> list[tuple[str, Path, Path]]:
    """Pair images with masks by name: ``[(id, image_path, mask_path), ...]`` sorted by id.

    A mask is ``<image stem><suffix>.<ext>``; with ``mask_suffix=None`` the
    suffix is detected among "", "_mask", "_label", "_gt", ... Raises
    :class:`KsegError` naming unmatched files.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _list(images_dir, IMAGE_EXTS)
    if not images:
        raise KsegError(f"{images_dir}: no images ({', '.join(IMAGE_EXTS)})")
    masks = _list(masks_dir, MASK_EXTS)
    if not masks:
        jpegs = [p.name for p in masks_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")]
        if jpegs:
            raise KsegError(f"{masks_dir}: masks are JPEG ({jpegs[0]}...); JPEG is lossy and blurs class ids "
                            f"and colours: save masks as PNG")
        raise KsegError(f"{masks_dir}: no masks ({', '.join(MASK_EXTS)})")
    suffixes = [mask_suffix] if mask_suffix is not None else list(MASK_SUFFIXES)
    best = max(suffixes, key=lambda s: sum(f"{i}{s}" in masks for i in images))
    pairs, no_mask = [], []
    used = set()
    for ident, img in images.items():
        m = masks.get(f"{ident}{best}")
        if m is None:
            no_mask.append(img.name)
        else:
            pairs.append((ident, img, m))
            used.add(f"{ident}{best}")
    no_image = [masks[k].name for k in masks if k not in used]
    if no_mask:
        hint = f" (expected {masks_dir / (Path(no_mask[0]).stem + best + '.png')})"
        raise KsegError(f"{images_dir}: {len(no_mask)} image(s) without a mask: {_few(no_mask)}{hint}")
    if no_image:
        raise KsegError(f"{masks_dir}: {len(no_image)} mask(s) without an image: {_few(no_image)}")
    return pairs
