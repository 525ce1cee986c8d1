"""Sections → a paginated A4 PDF with matplotlib's PdfPages: the same content as the HTML.

Text, tables and plots are all drawn by matplotlib, so the PDF needs no system tool: plots stay vector
(each is drawn into a region of the page, at the size the HTML uses), fonts are embedded as TrueType
(``pdf.fonttype: 42``; DejaVu Sans for text, DejaVu Sans Mono for tables), and the file carries no creation
date, so the same results give the same bytes. Layout is done first (a list of drawing operations per
page), so the contents on page 1 can give each section's page number; the first section (the summary of
findings) follows the contents on page 1.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure as MplFigure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import Rectangle

from .blocks import Figure, Heading, Paragraph, Section, Table
from .plots import RC

W, H = 8.27, 11.69  # A4, inches
MX, TOP, BOTTOM = 0.6, 0.65, 0.7
AVAIL = W - 2 * MX
SANS, MONO = "DejaVu Sans", "DejaVu Sans Mono"
TABLE_SIZE = 6.5  # points
MONO_EM = 0.602  # DejaVu Sans Mono advance width per em
SANS_EM = 0.56  # a conservative average for DejaVu Sans text
COLORS = {"text": "#222222", "note": "#555555", "missing": "#a05a00", "warning": "#b3261e"}

BOLD_EM = 0.62  # DejaVu Sans Bold, conservative
BREAKS = "/_.-,=:"

Op = Callable[[MplFigure], None]


def _pieces(word: str, width: int) -> list[str]:
    """``word`` cut into pieces of at most ``width`` characters, after a path or name separator
    (``/ _ . - , = :``) where one is near enough, else hard."""
    out = []
    while len(word) > width:
        cut = max((i + 1 for i, ch in enumerate(word[:width]) if ch in BREAKS), default=0)
        cut = cut if cut >= width // 3 else width
        out.append(word[:cut])
        word = word[cut:]
    return [*out, word] if word else out


def wrap_text(text: str, width: int) -> list[str]:
    """Greedy word wrap at ``width`` characters; a word longer than a line breaks after a separator
    (``results/paper/summary.parquet`` → ``results/paper/`` + ``summary.parquet``), never mid-word when
    a separator allows."""
    width = max(4, width)
    lines: list[str] = []
    cur = ""
    for word in text.split():
        for k, piece in enumerate(_pieces(word, width)):
            sep = " " if cur and k == 0 else ""
            if len(cur) + len(sep) + len(piece) <= width:
                cur += sep + piece
            else:
                if cur:
                    lines.append(cur)
                cur = piece
    if cur or not lines:
        lines.append(cur)
    return lines


class Layout:
    def __init__(self, footer: str):
        self.pages: list[list[Op]] = []
        self.kinds: list[list[str]] = []  # per page, one per op: heading, text, table, figure (for tests)
        self.footer = footer
        self.y = 0.0
        # headings just placed, not yet followed by content: {"page", "ops", "y0", "items"}; a page break
        # before their content moves them along, so a heading never ends a page
        self._trail: dict | None = None
        self._in_heading = False
        self.new_page()

    # --- pages
    def new_page(self) -> None:
        self.pages.append([])
        self.kinds.append([])
        self.y = TOP

    @property
    def page_no(self) -> int:
        return len(self.pages)

    def room(self) -> float:
        return H - BOTTOM - self.y

    def ensure(self, h: float) -> None:
        """Start a new page unless ``h`` inches fit below; headings that would end this page go along."""
        if h <= self.room() or self.y <= TOP + 1e-9:
            return
        trail = self._trail if self._trail and self._trail["page"] == self.page_no else None
        if trail is None:
            self.new_page()
            return
        if trail["y0"] <= TOP + 1e-9:
            return  # the headings open this page: moving them cannot help; what follows splits or shrinks
        del self.pages[-1][trail["ops"] :]
        del self.kinds[-1][trail["ops"] :]
        self.y = trail["y0"]
        self._trail = None
        self.new_page()
        for args in trail["items"]:
            self._heading_lines(*args)

    def op(self, fn: Op, kind: str = "text") -> None:
        self.pages[-1].append(fn)
        self.kinds[-1].append("heading" if self._in_heading else kind)
        if not self._in_heading:
            self._trail = None

    # --- text
    def line(
        self,
        text: str | Callable[[], str],
        *,
        size: float = 9,
        weight: str = "normal",
        family: str = SANS,
        color: str = "#222222",
        indent: float = 0.0,
        gap: float = 1.35,
        style: str = "normal",
    ) -> None:
        h = size * gap / 72
        self.ensure(h)
        x, y = MX + indent, self.y

        def draw(fig, x=x, y=y):
            fig.text(
                x / W,
                1 - y / H,
                text() if callable(text) else text,  # a callable: text known only after layout
                fontsize=size,
                fontweight=weight,
                family=family,
                color=color,
                va="top",
                ha="left",
                fontstyle=style,
            )

        self.op(draw)
        self.y += h

    def paragraph(
        self,
        text: str,
        *,
        size: float = 9,
        color: str = "#222222",
        indent: float = 0.0,
        style: str = "normal",
        after: float = 0.08,
    ) -> None:
        width = int((AVAIL - indent) * 72 / (size * SANS_EM))
        for ln in wrap_text(text, width):
            self.line(ln, size=size, color=color, indent=indent, style=style)
        self.y += after

    def space(self, h: float) -> None:
        self.y += h

    # --- blocks
    def heading(self, text: str, size: float = 11, keep: float = 0.6, before: float = 0.08) -> None:
        """A bold heading, wrapped, kept with (the start of) what follows: ``keep`` inches of it."""
        lines = wrap_text(text, int(AVAIL * 72 / (size * BOLD_EM)))
        self.ensure(before + len(lines) * size * 1.35 / 72 + 0.04 + min(keep, H - TOP - BOTTOM - 1.0))
        self._heading_lines(text, size, before)

    def _heading_lines(self, text: str, size: float, before: float) -> None:
        trail = self._trail if self._trail and self._trail["page"] == self.page_no else None
        start = {"page": self.page_no, "ops": len(self.pages[-1]), "y0": self.y, "items": []}
        self._in_heading = True
        try:
            if self.y > TOP + 1e-9:
                self.space(before)
            for ln in wrap_text(text, int(AVAIL * 72 / (size * BOLD_EM))):
                self.line(ln, size=size, weight="bold")
            self.space(0.04)
        finally:
            self._in_heading = False
        self._trail = trail or start
        self._trail["items"].append((text, size, before))

    def sources(self, sources: list[str]) -> None:
        if sources:
            self.paragraph("Source: " + ", ".join(sources), size=7, color="#666666", after=0.14)

    @staticmethod
    def _sources_height(sources: list[str]) -> float:
        if not sources:
            return 0.0
        lines = wrap_text("Source: " + ", ".join(sources), int(AVAIL * 72 / (7 * SANS_EM)))
        return len(lines) * 7 * 1.35 / 72 + 0.14

    def start_height(self, block) -> float:
        """Height a block needs on the page it starts on (a table that fits on a page is not split)."""
        if isinstance(block, Table):
            lay = self._table_layout(block, TABLE_SIZE)
            first = lay["caption_h"] + 3 * (lay["lh"] + 0.03)
            return lay["total"] if lay["total"] <= H - TOP - BOTTOM else first
        if isinstance(block, Figure):
            return self._figure_size(block)[1] + 0.45 + self._sources_height(block.sources)
        return 0.0

    @staticmethod
    def _figure_size(block: Figure) -> tuple[float, float]:
        w, h = block.size
        scale = min(1.0, AVAIL / w, (H - TOP - BOTTOM - 0.8) / h)
        return w * scale, h * scale

    def _table_layout(self, block: Table, size: float) -> dict:
        df = block.df
        cols = [str(c) for c in df.columns]
        cells = [[str(v) for v in row] for row in df.itertuples(index=False)]
        avail_chars = int(AVAIL * 72 / (size * MONO_EM)) - 2 * len(cols)
        natural = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
        widths = [max(3, min(n, 60)) for n in natural]
        # Shrink the widest column first, but not below its longest word (at most 24 characters) while another
        # column can give; then below it, down to 8 characters.
        words = [
            min(24, max([len(w) for v in [c, *(r[i] for r in cells)] for w in v.split()] or [3]))
            for i, c in enumerate(cols)
        ]
        for floor in (words, [8] * len(cols)):
            while sum(widths) > avail_chars:
                can = [i for i, w in enumerate(widths) if w > max(floor[i], 3)]
                if not can:
                    break
                i = max(can, key=lambda k: (widths[k], -k))
                widths[i] -= 1
        pad = 2
        lh = size * 1.25 / 72
        char = size * MONO_EM / 72
        xs = [MX]
        for w in widths:
            xs.append(xs[-1] + (w + pad) * char)

        wrap = wrap_text

        header = [wrap(c, w) for c, w in zip(cols, widths)]
        rows = [[wrap(v, w) for v, w in zip(r, widths)] for r in cells]
        caption_h = len(wrap_text(block.caption, int(AVAIL * 72 / (8 * SANS_EM)))) * 8 * 1.35 / 72 + 0.04
        total = (
            caption_h
            + sum(max(len(x) for x in r) * lh + 0.03 for r in [header, *rows])
            + 0.05
            + self._sources_height(block.sources)
        )
        return {"xs": xs, "header": header, "rows": rows, "lh": lh, "caption_h": caption_h, "total": total}

    def table(self, block: Table, size: float = TABLE_SIZE) -> None:
        lay = self._table_layout(block, size)
        xs, header, rows, lh = lay["xs"], lay["header"], lay["rows"], lay["lh"]
        caption_h, total = lay["caption_h"], lay["total"]
        if total <= H - TOP - BOTTOM:
            self.ensure(total)  # a table that fits on one page is not split (unless its heading opens a page)
        else:
            self.ensure(caption_h + 3 * (lh + 0.03))
        self.paragraph(block.caption, size=8, after=0.04)

        def draw_row(lines: list[list[str]], *, bold: bool) -> None:
            n = max(len(x) for x in lines)
            h = n * lh + 0.03
            y = self.y
            width = xs[-1] - MX

            def draw(fig, y=y, lines=lines, h=h):
                if bold:
                    fig.add_artist(
                        Rectangle(
                            (MX / W, 1 - (y + h) / H),
                            width / W,
                            h / H,
                            facecolor="#eeeeee",
                            edgecolor="none",
                            transform=fig.transFigure,
                        )
                    )
                for x, cell in zip(xs, lines):
                    fig.text(
                        x / W,
                        1 - (y + 0.015) / H,
                        "\n".join(cell),
                        fontsize=size,
                        family=MONO,
                        fontweight="bold" if bold else "normal",
                        va="top",
                        ha="left",
                        linespacing=1.25,
                    )
                fig.add_artist(
                    matplotlib.lines.Line2D(
                        [MX / W, (MX + width) / W],
                        [1 - (y + h) / H] * 2,
                        color="#cccccc",
                        linewidth=0.4,
                        transform=fig.transFigure,
                    )
                )

            self.op(draw, "table")
            self.y += h

        def head_height() -> float:
            return max(len(x) for x in header) * lh + 0.03

        self.ensure(head_height() + (max(len(x) for x in rows[0]) * lh + 0.03 if rows else 0))
        draw_row(header, bold=True)
        for r in rows:
            h = max(len(x) for x in r) * lh + 0.03
            if h > self.room():
                self.new_page()
                self.paragraph(f"(continued) {block.caption[:80]}", size=7, color="#666666", after=0.02)
                draw_row(header, bold=True)
            draw_row(r, bold=False)
        self.space(0.05)
        if block.note:
            self.paragraph(block.note, size=7.5, color=COLORS["note"], style="italic")
        self.sources(block.sources)

    def figure(self, block: Figure) -> None:
        w, h = self._figure_size(block)
        extra = 0.45 + self._sources_height(block.sources)
        self.ensure(h + extra)
        if h + extra > self.room():  # its heading opens this page: shrink the figure to fit beside it
            scale = max(0.3, (self.room() - extra) / h)
            w, h = w * scale, h * scale
        y = self.y
        x0 = MX + (AVAIL - w) / 2

        def draw(fig, y=y, w=w, h=h, x0=x0):
            # Subfigures are placed by grid ratios (not by a gridspec's margins): carve the rectangle out of a
            # 3 × 3 grid whose middle cell is the plot's region.
            eps = 1e-6
            gs = GridSpec(
                3,
                3,
                figure=fig,
                wspace=0,
                hspace=0,
                left=0,
                right=1,
                bottom=0,
                top=1,
                width_ratios=[max(x0, eps), w, max(W - x0 - w, eps)],
                height_ratios=[max(y, eps), h, max(H - y - h, eps)],
            )
            sub = fig.add_subfigure(gs[1, 1])
            sub.set_facecolor("none")
            block.draw(sub)

        self.op(draw, "figure")
        self.y += h + 0.05
        self.paragraph(block.caption, size=8, after=0.02)
        self.sources(block.sources)


def layout_report(
    sections: list[Section], *, title: str, meta_lines: list[str]
) -> tuple[Layout, dict[str, int]]:
    lay = Layout(title)
    starts: dict[str, int] = {}
    # front matter on page 1, the body right after it: the findings open the first page. The contents
    # lines read the section page numbers when they are drawn, after layout.
    for ln in wrap_text(title, int(AVAIL * 72 / (17 * BOLD_EM))):  # a long model name wraps, never cut
        lay.line(ln, size=17, weight="bold", gap=1.35)
    lay.space(0.08)
    for m in meta_lines:
        lay.paragraph(m, size=8.5, color="#444444", after=0.02)
    lay.space(0.2)
    lay.line("Contents", size=12, weight="bold", gap=1.6)
    for i, s in enumerate(sections, 1):
        tag = "   [missing]" if s.missing else ""
        entry = f"{i}. {s.title}{tag}".ljust(60, " ")
        lay.line(lambda entry=entry, sid=s.id: f"{entry}page {starts[sid]}", size=9, family=MONO)
    missing = [s for s in sections if s.missing]
    if missing:
        lay.space(0.2)
        lay.line("Missing sections", size=11, weight="bold", gap=1.6)
        for s in missing:
            lay.paragraph(f"{s.title}: {s.missing}", size=8.5, color=COLORS["missing"])
    lay.space(0.1)
    for s in sections:
        first = s.blocks[0] if s.blocks else None
        keep = max(1.2, lay.start_height(first)) if first is not None else 0.6
        if isinstance(first, Heading) and len(s.blocks) > 1:
            keep = max(keep, 0.4 + lay.start_height(s.blocks[1]))
        lay.heading(f"{sections.index(s) + 1}. {s.title}", size=14, keep=keep, before=0.3)
        starts[s.id] = lay.page_no
        lay.space(0.04)
        for i, b in enumerate(s.blocks):
            if isinstance(b, Heading):
                nxt = s.blocks[i + 1] if i + 1 < len(s.blocks) else None
                lay.heading(b.text, keep=max(0.6, lay.start_height(nxt)) if nxt is not None else 0.6)
            elif isinstance(b, Paragraph):
                prefix = "missing: " if b.kind == "missing" and not b.text.startswith("missing") else ""
                lay.paragraph(
                    prefix + b.text,
                    color=COLORS.get(b.kind, COLORS["text"]),
                    style="italic" if b.kind == "note" else "normal",
                )
            elif isinstance(b, Table):
                lay.table(b)
            elif isinstance(b, Figure):
                lay.figure(b)
        if s.missing:
            lay.paragraph("missing: " + s.missing, color=COLORS["missing"])
    return lay, starts


def render_pdf(sections: list[Section], *, title: str, meta_lines: list[str]) -> bytes:
    lay, _ = layout_report(sections, title=title, meta_lines=meta_lines)
    buf = io.BytesIO()
    metadata = {
        "Title": title,
        "Creator": "mice-toolkit reports.build",
        "CreationDate": None,
        "ModDate": None,
    }
    with matplotlib.rc_context(RC), PdfPages(buf, metadata=metadata) as pdf:
        total = len(lay.pages)
        for n, ops in enumerate(lay.pages, 1):
            fig = MplFigure(figsize=(W, H))
            for op in ops:
                op(fig)
            fig.text(
                0.5,
                0.35 / H,
                f"{title} — page {n} of {total}",
                ha="center",
                va="bottom",
                fontsize=7,
                color="#888888",
                family=SANS,
            )
            pdf.savefig(fig)
    return buf.getvalue()


def write_pdf(path: Path, data: bytes) -> None:
    from ablations.results import atomic_write_bytes

    atomic_write_bytes(Path(path), data)
