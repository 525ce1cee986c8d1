"""Build one self-contained report (HTML, optionally PDF) from a folder of probe, ablation and MICE results.

    python -m reports.build --results results --out report.html --pdf report.pdf

Walks ``--results`` for tables in the common results format (parquet + JSON manifest, recognised by the
manifest's ``kind`` and ``table``), and writes the sections setup, attention flows, ablations, minimal
interaction set, MICE comparison, notes on the MICE paper's directions, and sources. A section whose
results are absent says which and how to produce them. The same results give the same files, byte for
byte: nothing depends on the build time (times shown are the manifests' creation times).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ablations.evaluation.measures import parse_measures
from ablations.results import atomic_write_text, check_output_file, git_revision
from probe.errors import BadInput, cli

from .blocks import Section
from .discover import Results, discover
from .render_html import render_html
from .render_pdf import render_pdf, write_pdf
from .sections import DEFAULT_MEASURE, Options, build_sections


def default_title(results: Results) -> str:
    models = sorted(
        {Path(str(s.manifest.get("model"))).name for s in results.sources if s.manifest.get("model")}
    )
    if not models:
        return "Cross-encoder interaction report"
    shown = ", ".join(models[:2]) + (f" (+{len(models) - 2} more)" if len(models) > 2 else "")
    return f"Cross-encoder interaction report: {shown}"


def context(results: Results, display_root: str) -> dict:
    created = sorted(str(s.manifest.get("created")) for s in results.sources if s.manifest.get("created"))
    return {
        "results_dir": display_root,
        "n_tables": len(results.sources),
        "report_revision": git_revision(),
        "created_range": (f"{created[0]} – {created[-1]} (UTC, from the manifests)" if created else "–"),
    }


def _readable(path: Path) -> None:
    """Atomic writes create 0600 files; a report is meant to be shared: the usual mode under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def build_report(
    results_dir: Path,
    out: Path | None = None,
    pdf: Path | None = None,
    *,
    title: str | None = None,
    options: Options | None = None,
) -> tuple[list[Section], str, bytes | None]:
    """Build the sections and render them; write ``out`` / ``pdf`` when given. Returns (sections, html,
    pdf)."""
    results = discover(Path(results_dir))
    sections = build_sections(results, options or Options())
    title = title or default_title(results)
    display_root = Path(results_dir).as_posix()
    ctx = context(results, display_root)
    html = render_html(sections, title=title, context=ctx)
    meta = [
        (
            f"Built by python -m reports.build from {display_root} ({ctx['n_tables']} tables); "
            f"report code at git revision {ctx['report_revision']}."
        ),
        f"Results created {ctx['created_range']}.",
        (
            "Every table and figure names its source file (relative to the results folder); "
            "the Sources section lists each file's SHA-256."
        ),
    ]
    pdf_bytes = render_pdf(sections, title=title, meta_lines=meta) if pdf is not None else None
    if out is not None:
        atomic_write_text(Path(out), html)
        _readable(Path(out))
    if pdf is not None:
        write_pdf(Path(pdf), pdf_bytes)
        _readable(Path(pdf))
    return sections, html, pdf_bytes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reports.build",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder to read (default results/): every parquet + JSON manifest under it",
    )
    p.add_argument(
        "--out", type=Path, default=Path("report.html"), help="HTML file to write (default report.html)"
    )
    p.add_argument("--pdf", type=Path, default=None, help="also write this PDF (same content, paginated A4)")
    p.add_argument("--title", default=None, help="report title (default: from the models in the manifests)")
    p.add_argument("--measure", default=DEFAULT_MEASURE, help=f"measure shown (default {DEFAULT_MEASURE})")
    p.add_argument("--top", type=int, default=10, help="rows of the largest-effects table (default 10)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level for counts (default 0.05)")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for value, flag in ((args.out, "--out"), (args.pdf, "--pdf")):
        if value is not None:
            check_output_file(value, flag)
    if args.top < 1:
        raise BadInput(f"--top {args.top} must be >= 1")
    if not 0 < args.alpha < 1:
        raise BadInput(f"--alpha {args.alpha} must be in (0, 1)")
    parse_measures([args.measure])  # an unknown measure is refused here, not only noted inside the report
    sections, _, _ = build_report(
        args.results,
        args.out,
        args.pdf,
        title=args.title,
        options=Options(measure=args.measure, top=args.top, alpha=args.alpha),
    )
    for s in sections:
        print(f"{s.title:38s} {'missing: ' + s.missing if s.missing else 'ok'}")
    print(f"wrote {args.out}" + (f" and {args.pdf}" if args.pdf else ""))
    return 0


if __name__ == "__main__":
    main()
