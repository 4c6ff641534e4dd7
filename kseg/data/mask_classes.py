"""What the masks' values mean: binary detection, inferred palettes and class names, notes and warnings.

:func:`label_tables` looks at the values of all masks of a folder at once (see
:mod:`kseg.data.folder` for the rules) and says what it infers in ``notes``
(:class:`_Notes`: one line each, warnings prefixed ``warning:``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.data.masks import (_check_in_palette, _embedded_colors, _grey, _is_grey, _palette_table, _rgb,
                             _totals)
from kseg.errors import KsegError

MAX_CLASSES = 127  # label maps are int8
MAX_AUTO_COLORS = 32  # RGB masks without a palette file: more colours than this is not a class palette
RARE_PIXELS = 50  # a class with fewer pixels than this over all masks is warned about
GIVEN = "the class names given"
FIX = "list the real classes in classes.txt (one name a line), or mark it unknown with --ignore-index"


class _Notes(list):
    """The one-line statements and warnings of one load."""

    def say(self, text: str) -> None:
        self.append(text)

    def warn(self, text: str) -> None:
        self.append(f"warning: {text}")


def _ids_text(values) -> str:
    """``[0, 1, 2, 7, 9, 10]`` -> ``"0..2, 7, 9, 10"``."""
    values = sorted(int(v) for v in values)
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(f"{values[i]}..{values[j]}" if j - i >= 2 else ", ".join(str(v) for v in values[i:j + 1]))
        i = j + 1
    return ", ".join(parts)


def _files(paths, n=3) -> str:
    names = sorted({Path(p).name for p in paths})
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _named(src: str, names) -> str:
    """``classes.txt names 3 classes: a, b, c`` or ``3 class names were given: a, b, c``."""
    listed = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    n = len(names)
    if src == GIVEN:
        return f"{n} class name{'s were' if n > 1 else ' was'} given: {listed}"
    return f"{src} names {n} class{'es' if n > 1 else ''}: {listed}"


def _px(n: int) -> str:
    return f"{n} pixel" + ("" if n == 1 else "s")


def label_tables(raws, names, src, binary, ignore_index, masks_dir, palette, colors, ignore_colors, notes):
    """What the masks' values mean: ``(raws, names, colors, binary, tables, hint)``.

    ``tables`` maps a mask kind ("ids", "rgb") to ``(sorted values, their labels)``;
    ``hint`` a kind to what to suggest for a rare class. RGB masks whose colours
    are all grey are read as greyscale (``raws`` holds them converted).
    """
    rgb = [r for r in raws if r.kind == "rgb"]
    if rgb and colors is None and all(_is_grey(r) for r in rgb):  # greyscale masks saved as RGB
        raws = [_grey(r) if r.kind == "rgb" else r for r in raws]
        rgb = []
    ids = [r for r in raws if r.kind == "ids"]
    tables, hint, is_binary = {}, {}, False
    if rgb and ids and colors is None:
        raise KsegError(f"{masks_dir}: {rgb[0].path.name} is a colour (RGB) mask but {ids[0].path.name} holds "
                        f"class ids (indexed/greyscale): save all masks the same way, or map the colours to "
                        f"classes in palette.json")
    if rgb and colors is not None:  # RGB masks looked up in the palette file
        values, labels = _palette_table(palette, colors, ignore_colors)
        for r in rgb:
            _check_in_palette(r, values, Path(palette).name)
        tables["rgb"] = (values, labels)
        hint["rgb"] = f"check those masks, or name the colour 'ignore' in {Path(palette).name}"
    elif rgb:  # RGB masks without a palette file: their colours are the classes
        names, colors, is_binary = _auto_palette(rgb, names, src, binary, masks_dir, tables, notes)
        hint["rgb"] = "a stray colour? map the colours in palette.json and name this one 'ignore'"
    if ids:
        names, is_binary, id_colors = _id_table(ids, names, src, binary, ignore_index, masks_dir, tables, notes,
                                                embedded=colors is None)
        colors = colors if colors is not None else id_colors
        hint["ids"] = (FIX if src is None and not is_binary else "check those masks")
    return raws, names, colors, is_binary, tables, hint


def _auto_palette(rgb, names, src, binary, masks_dir, tables, notes):
    """Classes of RGB masks without a palette file: the colours found, sorted by colour code."""
    most = max(rgb, key=lambda r: len(r.keys))
    values, counts = _totals(rgb)
    if len(values) > MAX_AUTO_COLORS:
        raise KsegError(f"{most.path}: {len(most.keys)} colours in this mask ({len(values)} in all the masks) "
                        f"and no palette file: a JPEG-saved or anti-aliased mask? save masks with exact class "
                        f"colours (PNG, no smoothing), or list the class colours in palette.json")
    if len(values) < 2:
        raise KsegError(f"{masks_dir}: every mask pixel is colour {_rgb(values[0])}: one class, nothing to learn")
    if binary is True and len(values) > 2:
        third = next(r for r in rgb if len(set(r.present().tolist()) - set(values[:2].tolist())))
        extra = _rgb(next(v for v in third.present() if v not in values[:2]))
        raise KsegError(f"{third.path}: colour {extra} besides {_rgb(values[0])} and {_rgb(values[1])}: binary "
                        f"masks hold two colours (background first in colour order); drop --binary for "
                        f"multi-class masks, or map the colours in palette.json")
    if names is not None and len(names) == 1 and len(values) == 2 and binary is not False:
        names = ["background", names[0]]
    if names is not None and len(names) != len(values):
        raise KsegError(f"{masks_dir}: the RGB masks hold {len(values)} colours but {_named(src, names)}: map "
                        f"each colour to its class in palette.json")
    is_binary = binary is not False and len(values) == 2
    if names is None:
        names = ["background", "foreground"] if is_binary else [f"class{i}" for i in range(len(values))]
        src = None
    tables["rgb"] = (values, np.arange(len(values), dtype=np.int16))
    listed = ", ".join(f"{i} {_rgb(v)} {_px(int(c))}" for i, (v, c) in enumerate(zip(values, counts)))
    notes.say(f"RGB masks without a palette file: {len(values)} colours, taken as classes in colour order: "
              f"{listed}" + ("; binary segmentation (1 = foreground, 0 = background)" if is_binary else "")
              + ("; name them in palette.json" if src is None else f"; named from {src}"))
    return names, np.array([_rgb(v) for v in values], np.uint8), is_binary


def _id_table(ids, names, src, binary, ignore_index, masks_dir, tables, notes, embedded):
    """Labels of id masks: binary {0, k} detection, ids beyond the class names, inferred names.

    Puts ``(sorted values, their labels)`` in ``tables["ids"]``; returns ``(names, binary, colours)``
    (the colours of the indexed masks' own palette, or None).
    """
    values, counts = _totals(ids)
    vset = set(int(v) for v in values)
    ign = ignore_index
    w = sorted(vset - {ign}) if ign is not None else sorted(vset)
    unknown = f" and {ign} = unknown" if ign is not None and ign in vset else ""
    _check_id_values(names, w, vset, ign, binary, unknown, masks_dir)
    fg, ign_is_fg = _foreground_id(ids, names, w, vset, ign, binary)
    if fg is not None:
        names = _binary_ids(values, w, fg, ign, names, "" if ign_is_fg else unknown, tables, notes)
        class_values = [0, fg]
    else:
        names = _multi_class_ids(ids, values, counts, w, ign, names, src, unknown, masks_dir, tables, notes)
        class_values = np.arange(len(names))
    cols = _embedded_colors(ids, class_values) if embedded else None
    if cols is not None:
        notes.say("indexed PNG masks and no palette file: drawing the classes in the masks' own palette colours")
    return names, fg is not None, cols


def _check_id_values(names, w, vset, ign, binary, unknown, masks_dir) -> None:
    """Without class names, masks of unknown pixels alone, or of one class, are errors."""
    if names is None and not w:
        raise KsegError(f"{masks_dir}: every mask pixel is unknown ({ign})")
    if names is None and len(w) == 1 and not (binary is not False and ign not in (None, 0) and vset == {0, ign}):
        extra = (f" (and {ign} = unknown; 0/{ign} masks are binary: drop --no-binary)"
                 if binary is False and vset == {0, ign} else unknown and f" ({ign} = unknown)")
        raise KsegError(f"{masks_dir}: every mask pixel is {w[0]}{extra}: one class, nothing to learn")


def _foreground_id(ids, names, w, vset, ign, binary):
    """``(foreground id, whether it is the ignore value)`` of binary id masks, or ``(None, False)``."""
    nn = len(names) if names is not None else None
    if binary is False or nn not in (None, 1, 2):
        return None, False
    if ign is not None and ign != 0 and vset == {0, ign}:
        return ign, True  # 0/255 masks: 255 is the foreground, not "unknown"
    if len(w) == 2 and w[0] == 0:
        return w[1], False
    if binary is not True:
        return None, False
    others = [v for v in w if v != 0]
    if len(others) > 1:
        bad = next(r for r in ids if any(int(v) in others[1:] for v in r.present()))
        third = next(int(v) for v in bad.present() if int(v) in others[1:])
        raise KsegError(f"{bad.path}: value {third} besides 0 and {others[0]}: binary masks hold 0 "
                        f"(background) and one foreground value" + (f" ({ign} = unknown)" if ign is not None
                                                                     else "")
                        + "; drop --binary for multi-class masks")
    return (others[0] if others else 1), False


def _binary_ids(values, w, fg, ign, names, unknown, tables, notes):
    """The table of binary id masks (0 = background, ``fg`` = foreground, others unknown); returns the names."""
    labels = np.where(values == 0, 0, np.where(values == fg, 1, -1)).astype(np.int16)
    if names is None or len(names) == 1:
        names = ["background", names[0] if names else "foreground"]
    if names == ["background", "foreground"]:
        who = "foreground, 0 = background"
    else:
        who = f"foreground {names[1]!r}, 0 = background {names[0]!r}"
    head = (f"masks hold two values {{0, {fg}}}" if len(w) == 2 or fg == ign else
            f"masks hold {{{', '.join(str(v) for v in w)}}}")
    notes.say(f"{head}{unknown}: binary segmentation ({fg} = {who})")
    tables["ids"] = (values, labels)
    return names


def _multi_class_ids(ids, values, counts, w, ign, names, src, unknown, masks_dir, tables, notes):
    """The table of multi-class id masks: names inferred from the largest id, or ids beyond the names
    read as unknown; returns the names."""
    labels = values.astype(np.int64)
    if ign is not None:
        labels = np.where(labels == ign, -1, labels)
    if names is None:
        names = _names_from_ids(w, ign, unknown, masks_dir, notes)
    else:
        beyond = [v for v in w if v >= len(names)]
        if beyond:
            files = [r.path for r in ids if any(int(v) in beyond for v in r.present())]
            px = int(counts[np.isin(values, beyond)].sum())
            what = f"class id {beyond[0]} is" if len(beyond) == 1 else f"class ids {_ids_text(beyond)} are"
            notes.warn(f"{what} beyond the {len(names)} classes in {src} (0..{len(names) - 1}), in "
                       f"{_files(files)}: {'its' if len(beyond) == 1 else 'their'} {_px(px)} are treated as "
                       f"unknown")
            labels = np.where(labels >= len(names), -1, labels)
    tables["ids"] = (values, labels.astype(np.int16))
    return names


def _names_from_ids(w, ign, unknown, masks_dir, notes) -> list[str]:
    """``class0..classN`` up to the largest id, saying so and warning about the ids that never appear."""
    top = w[-1]
    if top + 1 > MAX_CLASSES:
        raise KsegError(f"{masks_dir}: class id {top}: kseg's label maps hold at most {MAX_CLASSES} classes "
                        f"(is {ign} the ignore value? pass --ignore-index)")
    names = [f"class{i}" for i in range(top + 1)]
    gaps = sorted(set(range(top + 1)) - set(w))
    notes.say(f"masks hold class ids {_ids_text(w)}{unknown and f' ({ign} = unknown)'} and there is no "
              f"classes.txt: {top + 1} classes "
              f"named class0..class{top}")
    if gaps:
        notes.warn(f"class id{'s' if len(gaps) > 1 else ''} {_ids_text(gaps)} never appear"
                   f"{'' if len(gaps) > 1 else 's'} in the masks, yet count{'' if len(gaps) > 1 else 's'} as "
                   f"{'classes' if len(gaps) > 1 else 'a class'}: {len(gaps)} of the {top + 1} classes are empty; "
                   f"list the real classes in classes.txt (one name a line; ids beyond them become unknown)")
    return names


def _class_warnings(names, totals, present, raws, src, hint, notes):
    """Warn about named classes that never appear and classes with fewer than RARE_PIXELS pixels."""
    def label(c):
        return str(c) if names[c] == f"class{c}" else f"{names[c]!r} ({c})"

    if src is not None:
        missing = [c for c in range(len(names)) if totals[c] == 0]
        if missing:
            notes.warn(f"class{'es' if len(missing) > 1 else ''} {', '.join(label(c) for c in missing)} "
                       f"never appear{'s' if len(missing) == 1 else ''} in the masks")
    for c in range(len(names)):
        if 0 < totals[c] < RARE_PIXELS:
            files = [r for r, p in zip(raws, present) if c in p]
            kinds = {r.kind for r in files}
            tip = hint.get(kinds.pop(), "check those masks") if len(kinds) == 1 else "check those masks"
            if "--ignore-index" in tip:
                tip += f" {c}"
            notes.warn(f"class {label(c)} has only {_px(int(totals[c]))} in all the masks, in "
                       f"{_files(r.path for r in files)}: too few to learn; {tip}")
