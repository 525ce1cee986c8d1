"""What a report is made of: sections of paragraphs, tables and figures, each naming its source files.

Sections are built once (:mod:`reports.sections`) and rendered twice, to HTML (:mod:`reports.render_html`)
and to PDF (:mod:`reports.render_pdf`), so both carry the same content. A table holds already formatted
strings (formatting is part of the content: both renderers print exactly the same digits). A figure holds
a function that draws into a matplotlib ``Figure`` or ``SubFigure``, so each renderer can give it its own
canvas (a standalone SVG for HTML, a region of an A4 page for PDF), and vector output in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Paragraph:
    text: str
    kind: str = "text"  # text | note | missing | warning


@dataclass
class Table:
    df: pd.DataFrame  # strings only
    caption: str
    sources: list[str] = field(default_factory=list)  # results-relative file paths
    note: str = ""


@dataclass
class Figure:
    draw: Callable  # draw(fig) -> None; fig is a matplotlib Figure or SubFigure
    caption: str
    size: tuple[float, float]  # inches (width, height) at which it reads well
    sources: list[str] = field(default_factory=list)
    alt: str = ""


@dataclass
class Heading:
    text: str


Block = Paragraph | Table | Figure | Heading


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    missing: str | None = None  # why the section has no content (shown instead of it)

    def add(self, block: Block) -> Block:
        self.blocks.append(block)
        return block

    @property
    def sources(self) -> list[str]:
        seen: dict[str, None] = {}
        for b in self.blocks:
            for s in getattr(b, "sources", []):
                seen[s] = None
        return list(seen)


def fmt(value, digits: int = 4, signed: bool = False) -> str:
    """A number as the report prints it (fixed digits; '–' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool,)):
        return "yes" if value else "no"
    if isinstance(value, (int,)) and not signed:
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "–"
    if round(v, digits) == 0:
        v = 0.0  # no "-0.0000"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_ci(lo, hi) -> str:
    """A confidence interval of a difference: ``[-0.0175, -0.0013]``."""
    return f"[{fmt(lo, signed=True)}, {fmt(hi, signed=True)}]"


def fmt_p(p) -> str:
    """A p-value: three decimals, two significant digits below 0.001 (as ``ablations.experiments.runner``
    prints)."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def stars(p) -> str:
    """Significance marks of a paired t-test p-value: * < 0.05, ** < 0.01, *** < 0.001."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return ""
    if math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
