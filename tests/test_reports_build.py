"""python -m reports.build on real result tables: produced here by the probe and ablation CLIs on a tiny BERT
over a tiny BEIR folder, then turned into an HTML and a PDF report.

Checks: every section in the HTML, numbers traced to their source tables, the PDF's pages, text, embedded
fonts and vector plots, byte-identical rebuilds, and missing or broken results reported per section.
The first PDF pages are rendered to PNG (pdftoppm, from Debian's poppler-utils) into
``results/report-artifacts/`` for CI to keep.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_tiny_bert

from ablations import run as ablation_run
from ablations import search as ablation_search
from ablations import sweep as ablation_sweep
from ablations.results import read_table
from probe import run as probe_run
from probe.model import CrossEncoder
from reports import build
from reports.blocks import fmt
from reports.build import build_report

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "results" / "report-artifacts"
SECTION_IDS = ("findings", "setup", "flows", "ablations", "minimal", "mice", "notes", "sources")
SECTION_TITLES = (
    "Summary of findings",
    "Setup",
    "Attention flows",
    "Ablations",
    "Minimal interaction set",
    "MICE comparison",
    "Notes on reproducing the MICE paper",
    "Sources",
)

DOCS = {
    "p1": "Lyon is a large city in France on the Rhone river.",
    "p2": "The Eiffel Tower stands in Paris, the capital of France.",
    "p3": "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "p4": "Plants use chlorophyll to capture light for photosynthesis.",
    "p5": "A volcano erupts when magma rises to the surface.",
    "p6": "Lava from the volcano flowed toward the village.",
    "p7": "The recipe needs flour, butter, sugar and two eggs.",
    "p8": "Bake the cake for forty minutes at a moderate heat.",
    "p9": "Rivers carry water from the mountains to the sea.",
    "p10": "Sugar is produced from cane or beet in many countries.",
}
QUERIES = {
    "a": "capital of france",
    "b": "how does photosynthesis work",
    "c": "volcano eruption",
    "d": "cake recipe",
}
QRELS = [
    ("a", "p2", 2),
    ("a", "p1", 1),
    ("b", "p3", 2),
    ("b", "p4", 2),
    ("c", "p5", 2),
    ("c", "p6", 1),
    ("d", "p7", 2),
    ("d", "p8", 1),
]


def write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in DOCS.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in QRELS)
    )
    return root


def _cli(main, argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, f"{main.__module__} {argv} exited {exc.value.code}"


@pytest.fixture(scope="module")
def study(tmp_path_factory, tokenizer):
    """Real result tables from the CLIs (probe, one ablation run, a sweep, a search) and the report built on
    them."""
    root = tmp_path_factory.mktemp("report-study")
    model = root / "tiny-model"
    CrossEncoder(make_tiny_bert(tokenizer, layers=3, seed=1), tokenizer, max_length=64).save(model)
    beir = write_beir(root / "beir")
    results = root / "results"
    common = ["--model", str(model), "--collection", str(beir)]
    abl = [*common, "--bootstrap", "200", "--no-progress"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MICE_CACHE", str(root / "cache"))
        mp.delenv("MICE_MODEL", raising=False)
        _cli(
            probe_run.main,
            [
                *common,
                "--queries",
                "4",
                "--depth",
                "4",
                "--flow-pairs",
                "2",
                "--attribution-pairs",
                "2",
                "--ig-steps",
                "4",
                "--out",
                str(results / "probe"),
            ],
        )
        _cli(ablation_run.main, [*abl, "--remove", "doc2query", "--out", str(results / "ablations" / "runs")])
        _cli(
            ablation_run.main, [*abl, "--remove", "cls2doc:1-2", "--out", str(results / "ablations" / "runs")]
        )
        _cli(
            ablation_sweep.main,
            [
                *abl,
                "--interactions",
                "query2doc",
                "doc2query",
                "cls2doc",
                "--out",
                str(results / "ablations" / "sweep"),
            ],
        )
        _cli(
            ablation_search.main,
            [
                *abl,
                "--interactions",
                "doc2query",
                "cls2doc",
                "--tolerance",
                "0.05",
                "--out",
                str(results / "ablations" / "search"),
            ],
        )
    out = root / "report"
    out.mkdir()
    _cli(
        build.main,
        ["--results", str(results), "--out", str(out / "report.html"), "--pdf", str(out / "report.pdf")],
    )
    return {
        "root": root,
        "results": results,
        "html": (out / "report.html").read_text(),
        "pdf": out / "report.pdf",
    }


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}".*?</section>', html, re.DOTALL)
    assert m, f"section {sid} not in the HTML"
    return unescape(m.group(0))


def _pdf_text(path: Path) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


# ------------------------------------------------------------------------------------------- HTML
def test_every_section_is_in_the_html(study):
    html = study["html"]
    for sid, title in zip(SECTION_IDS, SECTION_TITLES):
        sec = _section(html, sid)
        assert f"{title}</h2>" in sec
    for sid in ("setup", "flows", "ablations", "minimal", "sources"):
        assert "is-missing" not in _section(html, sid).split(">")[0], sid
    # what the tiny study lacks is said, with the command that produces it
    mice = _section(html, "mice")
    assert "missing: no MICE comparison table found under" in mice and "python -m ablations.compare" in mice
    assert "missing" in _section(html, "notes")


def test_html_is_self_contained_with_embedded_vector_plots(study):
    html = study["html"]
    assert not re.search(r"<(link|script)\b", html)
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    # flows heatmaps + rollout curve + sweep heatmap + search units
    assert len(images) >= 4
    for b64 in images:
        svg = base64.b64decode(b64).decode()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<path" in svg
        assert "<image" not in svg  # vector, no embedded raster
    assert len(re.findall(r"<img ", html)) == len(images)


def test_every_table_and_plot_names_its_source(study):
    html = study["html"]
    figures = re.findall(r'<figure class="(table|plot)">(.*?)</figure>', html, re.DOTALL)
    assert len(figures) >= 12
    for kind, body in figures:
        srcs = re.findall(r"<code>([^<]+)</code>", body.split('<p class="source">')[-1])
        assert '<p class="source">Source:' in body and srcs, body[:200]
        for s in srcs:
            if s.endswith(".parquet"):
                assert (study["results"] / s).is_file(), s


def test_numbers_come_from_the_tables(study):
    html, res = study["html"], study["results"]
    sweep = read_table(res / "ablations" / "sweep", "summary")
    nd = sweep[sweep["measure"] == "nDCG@10"]
    assert len(nd) == 3 * 3  # 3 interactions × 3 layers
    abl = _section(html, "ablations")
    assert (
        f"({nd['baseline_mean'].iloc[0]:.4f})"
        in base64.b64decode(re.findall(r'base64,([A-Za-z0-9+/=]+)"', abl)[0]).decode()
    )  # heatmap title: the baseline
    runs = read_table(res / "ablations" / "runs", "summary")
    pooled = pd.concat([nd, runs[runs["measure"] == "nDCG@10"]])
    top = pooled.loc[pooled["delta"].abs().idxmax()]
    largest = abl.split("Largest effects")[1]
    first_row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", largest, re.DOTALL).group(1)
    cells = re.findall(r"<td>(.*?)</td>", first_row)
    assert cells[0] == top["spec_label"] and cells[5] == fmt(top["delta"], signed=True)
    assert cells[6] == f"[{fmt(top['ci_low'], signed=True)}, {fmt(top['ci_high'], signed=True)}]"
    # each single run against BM25, as the runner stored it
    against = abl.split("against BM25, the candidates")[1].split("</table>")[0]
    for _, r in runs[runs["measure"] == "nDCG@10"].iterrows():
        row = next(
            re.findall(r"<td>(.*?)</td>", tr)
            for tr in re.findall(r"<tr>(.*?)</tr>", against, re.DOTALL)
            if f"<td>{r['spec_label']}</td>" in tr
        )
        assert row[2:4] == [fmt(r["bm25_mean"]), fmt(r["baseline_delta_bm25"], signed=True)]
        assert row[5] == fmt(r["delta_bm25"], signed=True)
    search = json.loads((res / "ablations" / "search" / "search.json").read_text())
    assert (search["removed_label"] or "none") in _section(html, "minimal")
    flows = read_table(res / "probe", "flows")
    q2d = flows[(flows["layer"] == 0) & (flows["source"] == "query") & (flows["target"] == "doc")][
        "value"
    ].mean()
    assert f"<td>{q2d:.4f}</td>" in _section(html, "flows")


# -------------------------------------------------------------------------------------------- PDF
def test_pdf_pages_text_fonts_and_vector_plots(study):
    from pypdf import PdfReader

    pages, text = _pdf_text(study["pdf"])
    assert 4 <= pages <= 20, pages
    flat = re.sub(r"\s+", " ", text)
    for i, title in enumerate(SECTION_TITLES, 1):
        assert f"{i}. {title}" in flat, title
    assert "Source: ablations/sweep/summary.parquet" in flat
    assert "missing: no MICE comparison table found under" in flat
    assert f"page {pages} of {pages}" in flat
    reader = PdfReader(str(study["pdf"]))
    fonts, images = set(), 0
    for page in reader.pages:
        res = page["/Resources"]
        for ref in (res.get("/Font") or {}).values():
            font = ref.get_object()
            desc = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
            fd = desc["/FontDescriptor"].get_object()
            assert any(k in fd for k in ("/FontFile", "/FontFile2", "/FontFile3")), (
                f"{font['/BaseFont']} not embedded"
            )
            fonts.add(str(font["/BaseFont"]))
        for ref in (res.get("/XObject") or {}).values():
            images += ref.get_object().get("/Subtype") == "/Image"
    assert any("DejaVuSans" in f for f in fonts) and any("Mono" in f for f in fonts)
    assert images == 0  # plots (heatmaps, colorbars) are vector


def test_pdf_layout_has_no_lone_heading_or_near_empty_page_and_a_whole_title(study, tmp_path):
    """A heading never ends a page, no page but the last is near-empty, the title wraps instead of being
    cut (a 12-layer model's long name), and no table cell breaks a word where a separator allows."""
    from reports.render_pdf import layout_report, render_pdf, wrap_text

    sections, _, _ = build_report(study["results"])
    title = "Interaction report: /work/shared/models/ms-marco-MiniLM-L-12-v2-dequant-int8 on dl19 and dl20"
    lay, starts = layout_report(sections, title=title, meta_lines=["meta"])
    assert starts["findings"] == 1  # the findings open page 1, under the contents
    for n, kinds in enumerate(lay.kinds, 1):
        assert kinds, f"page {n} is empty"
        assert kinds[-1] != "heading", f"page {n} ends with a heading: {kinds[-6:]}"
    data = render_pdf(sections, title=title, meta_lines=["meta"])
    (tmp_path / "r.pdf").write_bytes(data)
    from pypdf import PdfReader

    texts = [p.extract_text() for p in PdfReader(str(tmp_path / "r.pdf")).pages]
    first = re.sub(r"\s+", "", texts[0])
    assert re.sub(r"\s+", "", title) in first, texts[0][:300]  # every character of the title, in order
    from reports.render_pdf import AVAIL, BOLD_EM

    top = texts[0].splitlines()[0]
    assert top != title and len(top) <= int(AVAIL * 72 / (17 * BOLD_EM)), top  # wrapped to the page width
    if shutil.which("pdftotext"):  # poppler's text, page by page, where it is installed: the same verdict
        for n in range(1, len(texts)):
            out = subprocess.run(
                ["pdftotext", "-f", str(n), "-l", str(n), str(tmp_path / "r.pdf"), "-"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            body = out.replace(f"{title} — page {n} of {len(texts)}", "")
            assert len(body.strip()) > 600, f"pdftotext: page {n} is near-empty: {body.strip()[:200]!r}"
    assert "1. Summary of findings" in texts[0] and "Significance rule" in texts[0]
    assert re.search(r"1\. Summary of findings\s+page 1\b", texts[0]), texts[0][:600]  # contents filled in
    for n, text in enumerate(texts[:-1], 1):
        body = text.replace(f"{title} — page {n} of {len(texts)}", "")
        assert len(body.strip()) > 600, f"page {n} is near-empty: {body.strip()[:200]!r}"
    assert wrap_text("see results/paper/summary.parquet now", 16) == [
        "see",
        "results/paper/",
        "summary.parquet",
        "now",
    ]


def test_pdf_pages_render_to_png(study):
    """The first pages as PNG (a CI artifact, looked at by a person); needs pdftoppm (Debian:
    poppler-utils)."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (Debian package poppler-utils); PNG artifacts not rendered")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("page-*.png"):
        old.unlink()
    shutil.copy(study["pdf"], ARTIFACTS / "report.pdf")
    (ARTIFACTS / "report.html").write_text(study["html"])
    subprocess.run(
        ["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "7", str(study["pdf"]), str(ARTIFACTS / "page")],
        check=True,
        timeout=120,
    )
    pngs = sorted(ARTIFACTS.glob("page-*.png"))
    assert len(pngs) == 7
    import matplotlib.image as mpimg

    for png in pngs:
        img = mpimg.imread(png)
        ink = (img[..., :3].mean(axis=2) < 0.9).mean()
        assert ink > 0.005, f"{png.name} is blank"


# --------------------------------------------------------------------------------- reproducibility
def test_rebuild_is_byte_identical(study, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "git_revision", lambda: "fixed")  # other contributors commit meanwhile
    a = build_report(study["results"], tmp_path / "a.html", tmp_path / "a.pdf")
    b = build_report(study["results"], tmp_path / "b.html", tmp_path / "b.pdf")
    assert a[1] == b[1]
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.html").stat().st_mode & 0o044  # readable by others (atomic writes make 0600 files)


# ------------------------------------------------------------------------------------ missing input
def test_empty_results_folder_says_every_section_is_missing(tmp_path):
    (tmp_path / "results").mkdir()
    sections, html, _ = build_report(tmp_path / "results", tmp_path / "r.html", tmp_path / "r.pdf")
    html = unescape(html)
    assert all(s.missing for s in sections)
    assert 'class="summary-missing"' in html
    assert "no probe results (manifest kind 'probe')" in html and "python -m probe.run" in html
    assert "python -m ablations.sweep" in html and "python -m ablations.search" in html
    pages, text = _pdf_text(tmp_path / "r.pdf")
    assert (
        2 <= pages <= 3
    )  # the contents page, then the sections' "missing" notes flowing (not one page each)
    assert "missing:" in text


def test_partial_results_keep_the_other_sections(study, tmp_path):
    res = tmp_path / "results"
    shutil.copytree(study["results"] / "probe", res / "probe")
    sections, html, _ = build_report(res)
    state = {s.id: s.missing for s in sections}
    assert state["flows"] is None and state["setup"] is None
    assert "python -m ablations.sweep" in state["ablations"]
    assert "python -m ablations.search" in state["minimal"]
    assert "no MICE comparison table found" in state["mice"]
    # the probe without rollout: the flows section says what is missing instead of an empty plot
    for ext in ("parquet", "json"):
        (res / "probe" / f"rollout.{ext}").unlink()
    _, html, _ = build_report(res)
    flows = _section(html, "flows")
    assert "no rollout table" in flows
    assert len(re.findall(r"<img ", flows)) == 1  # the heatmaps only


def test_unreadable_tables_are_reported_not_fatal(study, tmp_path):
    res = tmp_path / "results"
    shutil.copytree(study["results"], res)
    (res / "ablations" / "sweep" / "summary.parquet").write_bytes(b"not a parquet file")
    meta = json.loads((res / "probe" / "scores.json").read_text())
    (res / "probe" / "scores.json").write_text(json.dumps({**meta, "schema_version": 99}))
    (res / "stray.parquet").write_bytes(b"")
    _, html, _ = build_report(res)
    abl = _section(html, "ablations")
    assert "ablations/sweep/summary.parquet could not be used" in abl and "unreadable" in abl
    assert "Single ablation runs" in abl  # the runs are still shown
    setup = _section(html, "setup")
    assert "probe/scores.json" in setup and "schema_version 99" in setup
    assert "stray.parquet: no manifest" in setup


def test_partial_sweep_is_marked(study, tmp_path, tokenizer, monkeypatch):
    """A sweep interrupted after some cells (run through the library): blank cells and a note, not a
    failure."""
    from ablations.data.collections import load_collection
    from ablations.experiments.runner import Experiment, Settings
    from ablations.experiments.sweep import Sweep, SweepConfig

    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "cache"))
    ce = CrossEncoder.from_pretrained(str(study["root"] / "tiny-model"), max_length=64)
    exp = Experiment(ce, load_collection(str(study["root"] / "beir")), Settings(n_boot=200))
    sweep = Sweep(exp, SweepConfig(interactions=["query2doc", "cls2doc"]), tmp_path / "results" / "sweep")
    sweep.out.mkdir(parents=True)
    sweep._claim_folder()
    for cell in sweep.cells[:4]:
        sweep.run_cell(cell)
    sweep.consolidate()
    _, html, _ = build_report(tmp_path / "results")
    abl = _section(html, "ablations")
    assert "Partial sweep: 4 of 6 cells finished" in abl
    assert len(re.findall(r"<img ", abl)) == 1


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    for argv, needle in (
        (["--results", str(tmp_path / "nope")], "does not exist"),
        (["--results", str(tmp_path), "--top", "0"], "--top 0 must be >= 1"),
        (["--results", str(tmp_path), "--out", str(tmp_path)], "is a folder"),
    ):
        with pytest.raises(SystemExit) as exc:
            build.main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err and needle in err, err


def test_an_evaluate_folder_is_listed_in_setup(study, tmp_path):
    """``python -m ablations.evaluate`` writes ``collections`` as a list (compare writes a dict): both are
    read."""
    from ablations import evaluate as evaluate_cli

    res = tmp_path / "results"
    shutil.copytree(study["results"] / "probe", res / "probe")
    beir = study["root"] / "beir"
    _cli(
        evaluate_cli.main,
        [
            "--model",
            str(study["root"] / "tiny-model"),
            "--collection",
            str(beir),
            "--out",
            str(res / "evaluate"),
        ],
    )
    meta = json.loads((res / "evaluate" / "metrics.json").read_text())
    assert isinstance(meta["collections"], list)
    sections, html, _ = build_report(res)
    assert {s.id: s.missing for s in sections}["setup"] is None
    setup = _section(html, "setup")
    assert "evaluate" in setup and str(beir.name) in setup


def test_the_report_opens_with_its_findings_under_one_significance_rule(study):
    from reports.findings import _verdict

    sections, html, _ = build_report(study["results"])
    first = sections[0]
    assert first.id == "findings" and first.missing is None
    text = " ".join(getattr(b, "text", "") for b in first.blocks)
    assert "Significance rule" in text and "p < 0.05" in text
    tables = [b for b in first.blocks if hasattr(b, "df")]
    assert tables and {"removed", "Δ", "95% CI", "verdict"} <= set(tables[0].df.columns)
    assert all(v.startswith(("significant", "not significant", "no test")) for v in tables[0].df["verdict"])
    assert html.index("Summary of findings") < html.index("Setup")
    # the rule's edge case, said where it happens
    row = {"p": 0.082, "ci_low": -0.0175, "ci_high": -0.0013, "n": 43}
    assert (
        _verdict(row, 0.05) == "not significant (p 0.082); the bootstrap CI excludes 0, the t-test does not"
    )
    assert _verdict({"p": 0.001, "ci_low": -0.3, "ci_high": -0.1, "n": 5}, 0.05).endswith("only 5 queries")
