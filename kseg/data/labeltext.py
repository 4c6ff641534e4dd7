"""A vectorised NumPy parser for whitespace-separated integer matrices (iccv09's label files)."""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError

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
        if after[-1] >= buf.size or (buf[after] != 49).any() or (np.diff(minus) == 1).any():
            return None  # a sign before anything but a '1' (a second '-' included: "--1" is no number)
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
