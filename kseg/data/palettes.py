"""Palette files: class names and their colours, as JSON or text.

JSON: ``{"sky": [70, 130, 180], ...}``, ``{"classes": {...}}`` or
``[{"name": "sky", "color": [70, 130, 180]}, ...]``; text: one class a line,
``sky 70 130 180``, ``70 130 180 sky``, ``sky #4682b4`` or ``#4682b4 sky``.
An entry named in :data:`IGNORE_NAMES` marks unknown pixels and is not a class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

IGNORE_NAMES = ("ignore", "void", "unknown", "unlabeled", "unlabelled")


def read_palette(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read a palette file (JSON or text): ``(class_names, colours (C, 3), ignore_colours (K, 3))``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise KsegError(f"{path}: cannot read palette file ({err.strerror})") from None
    entries = _palette_json(path, text) if text.lstrip().startswith(("{", "[")) else _palette_text(path, text)
    names, colors, ignore = [], [], []
    for name, color in entries:
        if len(color) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in color):
            raise KsegError(f"{path}: class {name!r}: colour {color} is not three integers in 0..255")
        (ignore if name.strip().lower() in IGNORE_NAMES else colors).append(tuple(int(v) for v in color))
        if name.strip().lower() not in IGNORE_NAMES:
            names.append(name)
    if not names:
        raise KsegError(f"{path}: no classes in the palette file")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise KsegError(f"{path}: class {dup!r} appears twice")
    every = colors + ignore
    if len(set(every)) != len(every):
        dup = next(c for c in every if every.count(c) > 1)
        raise KsegError(f"{path}: colour {dup} is given to two classes")
    return names, np.array(colors, np.uint8).reshape(-1, 3), np.array(ignore, np.uint8).reshape(-1, 3)


def _palette_json(path: Path, text: str):
    try:
        data = json.loads(text)
    except ValueError as err:
        raise KsegError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if isinstance(data, dict):
        return [(str(k), _as_color(path, k, v)) for k, v in data.items()]
    if isinstance(data, list):
        out = []
        for item in data:
            if not (isinstance(item, dict) and "name" in item and ("color" in item or "colour" in item)):
                raise KsegError(f"{path}: each entry needs a name and a color, e.g. "
                                f'{{"name": "sky", "color": [70, 130, 180]}}; got {item!r}')
            out.append((str(item["name"]), _as_color(path, item["name"], item.get("color", item.get("colour")))))
        return out
    raise KsegError(f'{path}: expected {{"name": [r, g, b], ...}} or a list of {{"name", "color"}} entries')


def _as_color(path, name, value):
    if isinstance(value, str):
        return _hex(path, name, value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise KsegError(f"{path}: class {name!r}: colour {value!r} is not [r, g, b] or #rrggbb")


def _hex(path, name, token: str):
    t = token.lstrip("#")
    if len(t) != 6:
        raise KsegError(f"{path}: class {name!r}: colour {token!r} is not #rrggbb")
    try:
        return [int(t[i:i + 2], 16) for i in (0, 2, 4)]
    except ValueError:
        raise KsegError(f"{path}: class {name!r}: colour {token!r} is not #rrggbb") from None


def _is_hex(token: str) -> bool:
    return len(token) == 7 and token[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in token[1:])


def _palette_text(path: Path, text: str):
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or (line.startswith("#") and not _is_hex(line.split()[0])) or line.startswith("//"):
            continue
        tok = line.split()

        def ints(ts):
            try:
                return [int(t) for t in ts]
            except ValueError:
                return None

        if len(tok) >= 4 and ints(tok[:3]) is not None:
            out.append((" ".join(tok[3:]), ints(tok[:3])))
        elif len(tok) >= 4 and ints(tok[-3:]) is not None:
            out.append((" ".join(tok[:-3]), ints(tok[-3:])))
        elif len(tok) >= 2 and _is_hex(tok[0]):
            out.append((" ".join(tok[1:]), _hex(path, tok[1], tok[0])))
        elif len(tok) >= 2 and _is_hex(tok[-1]):
            out.append((" ".join(tok[:-1]), _hex(path, tok[0], tok[-1])))
        else:
            raise KsegError(f"{path}: line {lineno}: expected 'name r g b', 'r g b name' or 'name #rrggbb', "
                            f"got {line!r}")
    return out


def write_palette(path, class_names, colors) -> Path:
    """Write a JSON palette file ``{"name": [r, g, b], ...}`` that :func:`read_palette` reads."""
    path = Path(path)
    data = {str(n): [int(v) for v in c] for n, c in zip(class_names, np.asarray(colors).reshape(-1, 3))}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
