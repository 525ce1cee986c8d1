"""Progress bars that also work in a log: tqdm on a terminal, periodic plain lines elsewhere.

On a terminal a bar redraws in place as usual. When stderr is a file, a pipe or CI's log, a redrawing bar
would be one endless line of carriage returns (or, as before, nothing at all), so :func:`bar` prints one
plain line per update instead, at most every ``MICE_PROGRESS_INTERVAL`` seconds (default 30)::

    scoring dl19:  42%|####2     | 1806/4300 [02:31<03:29, 11.9pair/s]

Every CLI shows them unless ``--no-progress`` is given.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm
from tqdm.std import tqdm as plain_tqdm

#: Seconds between two progress lines when stderr is not a terminal.
DEFAULT_INTERVAL = 30.0


class _Lines:
    """A stream for tqdm that turns each in-place redraw (``"\\r" + status``) into one line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MICE_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class _LogBar(plain_tqdm):
    """A bar for logs: a new postfix or description waits for the next periodic line (tqdm's default,
    ``refresh=True``, would print a line at every call, every training step)."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    def set_postfix_str(self, s="", refresh=False):
        super().set_postfix_str(s, refresh=refresh)

    def set_description(self, desc=None, refresh=False):
        super().set_description(desc, refresh=refresh)


def bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, as plain periodic lines when stderr is not a terminal."""
    stream = sys.stderr
    if "file" not in kwargs and not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.update(file=_Lines(stream), ascii=True, ncols=100)
        kwargs.setdefault("mininterval", interval())
        kwargs.setdefault("maxinterval", max(interval(), 10.0))
        return _LogBar(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
