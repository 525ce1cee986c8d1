"""Sections → one self-contained HTML file (Jinja2 template, CSS inline, plots as embedded SVG).

Plots are SVG (vector) embedded as ``data:`` URIs, so the file has no external resource and each plot keeps
its own ids. Rendering is deterministic: matplotlib's ``svg.hashsalt`` is fixed and the SVG date omitted,
tables are pre-formatted strings, and nothing depends on the build time, so the same results give a
byte-identical file.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from matplotlib.figure import Figure as MplFigure

from .blocks import Figure, Heading, Paragraph, Section, Table
from .plots import RC

TEMPLATES = Path(__file__).resolve().parent / "templates"


def figure_svg(block: Figure) -> bytes:
    with matplotlib.rc_context(RC):
        fig = MplFigure(figsize=block.size)
        block.draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def table_html(df) -> str:
    return df.to_html(index=False, classes="report", border=0, escape=True, na_rep="–")


def _block(b) -> dict:
    if isinstance(b, Heading):
        return {"type": "heading", "text": b.text}
    if isinstance(b, Paragraph):
        return {"type": "paragraph", "text": b.text, "kind": b.kind}
    if isinstance(b, Table):
        return {
            "type": "table",
            "caption": b.caption,
            "html": table_html(b.df),
            "sources": b.sources,
            "note": b.note,
        }
    if isinstance(b, Figure):
        return {
            "type": "figure",
            "caption": b.caption,
            "sources": b.sources,
            "alt": b.alt or b.caption,
            "svg_b64": base64.b64encode(figure_svg(b)).decode("ascii"),
            "width_px": int(b.size[0] * 110),
        }
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(sections: list[Section], *, title: str, context: dict) -> str:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    secs = [
        {"id": s.id, "title": s.title, "missing": s.missing, "blocks": [_block(b) for b in s.blocks]}
        for s in sections
    ]
    return template.render(
        title=title,
        sections=secs,
        missing=[s for s in secs if s["missing"]],
        css=(TEMPLATES / "style.css").read_text(),
        **context,
    )
