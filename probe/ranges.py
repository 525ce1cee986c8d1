"""Layer and head selections: ``0-6``, ``0-2,5``, ``all`` (0-based, inclusive ranges), parsed in one place.

- :func:`parse_ranges` checks the syntax only (``"0-2,5" → ((0, 2), (5, 5))``, ``"all" → None``);
- :func:`resolve_ranges` picks the indices out of ``0..n-1`` under the out-of-range rule (:func:`fit_ranges`):
  a range starting past the last index is an error, one ending past it is clamped with a one-line notice
  (``layers 0-6 → 0-5: the model has 6 layers``; heads follow the same rule), or refused with
  ``clamp=False``;
- :func:`parse_indices` is the probe's front end (``None``, ints and lists of ints too; nothing is clamped);
- :func:`format_ranges` writes indices back (``[0, 1, 2, 5] → "0-2,5"``).

Both front ends read the same syntax and apply the same rule; each words its errors for its own users (a
mask rule names the range, the probe names the first index the model lacks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import BadInput

_ITEM = re.compile(r"(\d+)(?:-(\d+))?")
_USE = "use e.g. 0-6, 0-2,5 or all (0-based, inclusive)"

Ranges = tuple[tuple[int, int], ...]


class RangeProblem(ValueError):
    """What is wrong with a selection, for the caller to word: ``malformed`` or ``reversed`` (syntax) at
    ``item`` (as written), or a range ``(start, end)`` that ``starts`` or ``ends`` outside ``0..n-1``."""

    def __init__(self, what: str, item: str = "", start: int = 0, end: int = 0):
        super().__init__(f"{what}: {item!r}" if item else f"{what}: {start}-{end}")
        self.what, self.item, self.start, self.end = what, item, start, end


def _split(text: str) -> Ranges:
    """The ranges of a comma list (no ``all``, not empty); :class:`RangeProblem` at the first bad item."""
    out = []
    for item in text.split(","):
        m = _ITEM.fullmatch(item.strip())
        if not m:
            raise RangeProblem("malformed", item)
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        if end < start:
            raise RangeProblem("reversed", item, start, end)
        out.append((start, end))
    return tuple(out)


def fit_ranges(ranges: Iterable[tuple[int, int]], n: int, *, clamp: bool) -> tuple[tuple[int, ...], bool]:
    """The out-of-range rule: the sorted indices of ``ranges`` in ``0..n-1`` and whether one was clamped.

    A range starting outside ``0..n-1`` is an error; one ending past ``n - 1`` is cut to it with ``clamp``,
    an error without. Errors are :class:`RangeProblem` (``starts`` / ``ends``) for the front ends to word.
    """
    picked: set[int] = set()
    clamped = False
    for start, end in ranges:
        if not 0 <= start <= n - 1:
            raise RangeProblem("starts", start=start, end=end)
        if end > n - 1:
            if not clamp:
                raise RangeProblem("ends", start=start, end=end)
            end, clamped = n - 1, True
        picked.update(range(start, end + 1))
    return tuple(sorted(picked)), clamped


def parse_ranges(text: str, kind: str = "layers") -> Ranges | None:
    """Parse ``"0-6"``, ``"0-2,5"`` or ``"all"`` (→ ``None``) into inclusive ``(start, end)`` pairs.

    Only the syntax is checked here (``7-2`` and ``a-b`` are errors); :func:`resolve_ranges` checks the
    values against a model.
    """
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"empty {kind} range {text!r}; {_USE}")
    if text.strip().lower() == "all":
        return None
    try:
        return _split(text)
    except RangeProblem as p:
        if p.what == "malformed":
            raise BadInput(f"malformed {kind} range {text!r} (item {p.item.strip()!r}); {_USE}") from None
        raise BadInput(
            f"malformed {kind} range {text!r}: {p.start}-{p.end} ends before it starts; "
            f"write {p.end}-{p.start}"
        ) from None


def format_ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5] → "0-2,5"`` (sorted, duplicates merged)."""
    idx = sorted({int(i) for i in indices})
    parts, i = [], 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(parts)


def resolve_ranges(
    text: str, n: int, kind: str = "layers", clamp: bool = True
) -> tuple[tuple[int, ...], str | None]:
    """Indices selected by ``text`` out of ``0..n-1`` and a notice if a range was clamped.

    A range starting at or past ``n`` is an error; with ``clamp`` a range ending past ``n - 1`` is cut
    to ``n - 1`` (notice ``layers 0-6 → 0-5: the model has 6 layers``), without ``clamp`` an error.
    """
    ranges = parse_ranges(text, kind)
    if ranges is None:
        return tuple(range(n)), None
    singular = kind.removesuffix("s")
    try:
        picked, clamped = fit_ranges(ranges, n, clamp=clamp)
    except RangeProblem as p:
        if p.what == "starts":
            raise BadInput(
                f"{kind} range {text!r} starts at {singular} {p.start}, beyond the last "
                f"{singular} {n - 1}: the model has {n} {kind} (0-based)"
            ) from None
        raise BadInput(f"{kind} {text!r} out of range: the model has {n} {kind} (0..{n - 1})") from None
    notice = f"{kind} {text.strip()} → {format_ranges(picked)}: the model has {n} {kind}" if clamped else None
    return picked, notice


def parse_indices(spec: str | int | Iterable[int] | None, n: int, what: str = "layer") -> list[int]:
    """``None``/``"all"``/``""`` → ``0..n-1``; ``"0-3,5"`` (the :func:`parse_ranges` syntax), an int or ints →
    sorted unique list. Nothing is clamped.

    Out-of-range or malformed values raise :class:`BadInput` naming the value and the allowed range.
    """
    allowed = f"this model has {what}s 0-{n - 1}"
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("all", "")):
        return list(range(n))
    if isinstance(spec, (int, np.integer)):
        ranges: Ranges = ((int(spec), int(spec)),)
    elif isinstance(spec, str):
        try:
            ranges = _split(spec)
        except RangeProblem as p:
            if p.what == "malformed":
                raise BadInput(
                    f"{what} selection {spec!r} is malformed at {p.item!r}; use e.g. 0-3,5 "
                    f"(0-based, inclusive ranges); {allowed}"
                ) from None
            raise BadInput(
                f"{what} range {p.item.strip()!r} is empty (end before start); {allowed}"
            ) from None
    else:
        try:
            values = [int(v) for v in spec]
        except (TypeError, ValueError):
            raise BadInput(f"{what} selection {spec!r} is not a list of integers; {allowed}") from None
        ranges = tuple((v, v) for v in values)
    try:
        picked, _ = fit_ranges(ranges, n, clamp=False)
    except RangeProblem as p:  # the first index the model lacks
        raise BadInput(f"{what} {p.start if p.what == 'starts' else n} is out of range; {allowed}") from None
    if not picked:
        raise BadInput(f"{what} selection {spec!r} is empty; {allowed}")
    return list(picked)


__all__ = [
    "RangeProblem",
    "Ranges",
    "fit_ranges",
    "format_ranges",
    "parse_indices",
    "parse_ranges",
    "resolve_ranges",
]
