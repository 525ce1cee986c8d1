"""The MICE paper's table on the reference cross-encoder in one call: :func:`paper`
(``python -m ablations.paper``).

Rows, all re-ranking the same BM25 candidates with the same reference's tokenizer and lengths:

- ``cross-encoder`` — the reference, full attention;
- ``mice-step0`` … ``mice-step3`` — the reference under the paper's cumulative masks, not retrained
  (``mice-step3`` = query-document interaction from layer ``K = layers // 3``: 4 on 12 layers);
- ``mice-masked`` — MICE-ℓK+3 (``mice-final``: merge at K, last interaction layer K+2, later layers
  dropped) on the reference's weights, not retrained, run with its fastest exact plan (document states
  precomputed);
- ``mice-retrained`` / ``maxsim`` / ``lite`` — the students of ``python -m ablations.retrain`` (distilled
  from the reference, margin-MSE), when their folders are given; a row that is not given is listed as
  missing, never filled in.

Columns: nDCG@10 on TREC DL 2019 and DL 2020 (in domain: every judged query, BM25 top-100) and BEIR
SciFact (out of domain: all 300 test queries), each with a paired t-test against the cross-encoder; latency
per query of 100 candidates (every model in turn query by query, one run), the speed-up over the
cross-encoder, index storage per passage and parameters; and the paper's own number beside ours wherever
the paper reports one (:data:`PAPER`).

Output (the common results format): ``per_query`` and ``comparison`` tables exactly as
:mod:`ablations.experiments.compare` writes them (so ``python -m reports.build`` renders them), plus
``paper`` — one row per model × collection with ours, the paper's, and their difference. Resumable through
compare's per-model partial tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.evaluation.stats import paired_stats
from ablations.experiments.compare import (
    FIRST_STAGE,
    MICE_RETRAINED,
    REFERENCE,
    CompareConfig,
    compare,
    fmt_number,
    name_width,
)
from ablations.mice.export import export
from probe.errors import BadInput

#: Where the paper's numbers come from.
PAPER_SOURCE = (
    "MICE paper (Vast et al. 2026, arXiv 2602.16299), MiniLM-L12 cross-encoder, nDCG@10 on TREC DL "
    "2019 / 2020 (BM25 top-100), latency with document states precomputed (GPU)"
)
#: The paper's numbers for the rows and columns of this table: (model, collection) -> nDCG@10, and
#: the doc-cache MICE model's latency speed-up over the cross-encoder. Only what the paper reports.
PAPER: dict[tuple[str, str], float] = {
    (REFERENCE, "dl19"): 0.755,
    (REFERENCE, "dl20"): 0.736,
    ("mice-retrained", "dl19"): 0.726,
    ("mice-retrained", "dl20"): 0.693,
}
PAPER_SPEEDUP = {"mice-retrained": 4.2}
#: The late-interaction rows every MICE row is also tested against (the paper: MICE above them out of domain).
LATE_ROWS = ("maxsim", "lite")
#: The masked steps, in the paper's order.
STEPS = ("mice-step0", "mice-step1", "mice-step2", "mice-step3")
COLLECTIONS = ("dl19", "dl20", "scifact")
#: Rows in the table's order, with what each is.
ROWS = {
    FIRST_STAGE: "BM25, the first stage: the candidates' own order (no re-ranking)",
    REFERENCE: "the reference cross-encoder, full attention",
    "mice-step0": "masked, no retraining: attention sinks removed",
    "mice-step1": "masked: + CLS reads the query side only",
    "mice-step2": "masked: + documents never read the query",
    "mice-step3": "masked: + no query-document interaction before layer K",
    "mice-masked": "MICE-ℓK+3 on the reference's weights, not retrained (doc-cache plan)",
    "mice-retrained": "MICE-ℓK+3 retrained (distilled from the reference)",
    "maxsim": "ColBERT-style MaxSim on the same backbone, distilled the same way",
    "lite": "LITE on the same backbone, distilled the same way",
}
RETRAIN_HINT = {
    "mice-retrained": "python -m ablations.retrain --config <out>/mice.json --out runs/mice12/model",
    "maxsim": "python -m ablations.retrain --config <out>/mice.json --student maxsim "
    "--out runs/mice12/maxsim",
    "lite": "python -m ablations.retrain --config <out>/mice.json --student lite --out runs/mice12/lite",
}


@dataclass
class PaperConfig:
    """``python -m ablations.paper``'s flags, one field each."""

    reference: str = "reference"
    config: str = "mice-final"  # the MICE architecture (a preset or a mice.json)
    mice: str | None = None
    mice_variants: dict[str, str] | None = None  # label -> folder: rows "mice-retrained-<label>"
    maxsim: str | None = None
    lite: str | None = None
    collections: list[str] = field(default_factory=lambda: list(COLLECTIONS))
    # collections the masked steps 0-3 are scored on (None: all): each step is a full cross-encoder pass
    step_collections: list[str] | None = None
    queries: int | None = None  # first N queries of each collection (default: all)
    ood_queries: int | None = None  # first N queries of the out-of-domain collections (default: --queries)
    depth: int | None = None  # candidates per query (default: all 100)
    latency_queries: int = 5
    threads: int | None = None
    bootstrap: int = 10000
    seed: int = 0
    out: Path = Path("results/paper")
    progress: bool = False

    def __post_init__(self):
        if self.step_collections is not None:
            for c in self.step_collections:
                if c not in self.collections:
                    raise BadInput(
                        f"--step-collections {c!r} is not one of --collections: {', '.join(self.collections)}"
                    )

    def compare_config(self) -> CompareConfig:
        return CompareConfig(
            reference=self.reference,
            config=self.config,
            masks=list(STEPS),
            mask_collections=None if self.step_collections is None else list(self.step_collections),
            mice=self.mice,
            mice_variants=self.mice_variants,
            maxsim=self.maxsim,
            lite=self.lite,
            first_stage=True,
            collections=list(self.collections),
            queries=self.queries,
            ood_queries=self.ood_queries,
            depth=self.depth,
            latency_queries=self.latency_queries,
            threads=self.threads,
            bootstrap=self.bootstrap,
            seed=self.seed,
            out=self.out,
            progress=self.progress,
        )


def paper(cfg: PaperConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Run the comparison; returns (per_query, comparison, paper table, manifest fields)."""
    ccfg = cfg.compare_config()
    if not Path(cfg.config).is_file():  # a preset: export it for the reference, so students retrain from it
        mice_cfg, _ = export(cfg.config, cfg.reference, {})
        ccfg.config = str(Path(cfg.out) / "mice.json")
        mice_cfg.save(ccfg.config)
    per_q, summary, meta = compare(ccfg)
    table = paper_table(summary, per_q, bootstrap=cfg.bootstrap, seed=cfg.seed)
    missing = {m: RETRAIN_HINT[m] for m in RETRAIN_HINT if getattr(cfg, _flag(m)) is None}
    meta = {
        **meta,
        "paper": {"source": PAPER_SOURCE, "ndcg10": {f"{m}|{c}": v for (m, c), v in PAPER.items()}},
        "paper_speedup": PAPER_SPEEDUP,
        "rows": ROWS,
        "missing_rows": missing,
        "paper_settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    return per_q, summary, table, meta


def _against(per_q: pd.DataFrame, base: str, bootstrap: int, seed: int) -> dict:
    """(model, collection) -> (Δ nDCG@10, paired t-test p) against ``base`` on the same queries."""
    nd = per_q[per_q["measure"] == "nDCG@10"]
    ref = nd[nd["model"] == base].set_index(["collection", "query_id"])["value"]
    out = {}
    if ref.empty:
        return out
    for (model, coll), part in nd[nd["model"] != base].groupby(["model", "collection"], sort=False):
        if coll not in ref.index.get_level_values(0):
            continue
        st = paired_stats(
            part["value"].to_numpy(),
            ref.loc[coll].reindex(part["query_id"]).to_numpy(),
            n_boot=bootstrap,
            seed=seed,
        )
        out[(model, coll)] = (float(st.delta), float(st.p))
    return out


def _paper_row(model: str) -> str:
    """The paper's row a model stands for: a MICE variant (``mice-retrained-<label>``, another recipe)
    is MICE-ℓK+3 retrained too, so it sits under that row and is set beside the same paper numbers."""
    return MICE_RETRAINED if model.startswith(MICE_RETRAINED + "-") else model


def _flag(model: str) -> str:
    return "mice" if model == "mice-retrained" else model


def paper_table(
    summary: pd.DataFrame, per_q: pd.DataFrame | None = None, *, bootstrap: int = 10000, seed: int = 0
) -> pd.DataFrame:
    """One row per model × collection: our nDCG@10, Δ and p against the cross-encoder, the paper's
    nDCG@10 where it reports one, latency, speed-up (ours and the paper's), storage, parameters; and,
    when ``per_q`` holds a BM25 row, Δ and p (paired t-test over queries) against BM25; and, for the MICE
    rows (masked, retrained and its variants), Δ and p against each late-interaction row present
    (``delta_maxsim``, ``p_maxsim``, ``delta_lite``, ``p_lite``: the paper's out-of-domain claim)."""
    nd = summary[summary["measure"] == "nDCG@10"]
    vs_bm25 = _against(per_q, FIRST_STAGE, bootstrap, seed) if per_q is not None else {}
    present = set(per_q["model"]) if per_q is not None else set()
    vs_late = {b: _against(per_q, b, bootstrap, seed) for b in LATE_ROWS if b in present}
    ref_latency = float(nd.loc[nd["model"] == REFERENCE, "latency_ms_per_query"].iloc[0])
    rows = []
    for _, r in nd.iterrows():
        row = _paper_row(r["model"])
        ours_paper = PAPER.get((row, r["collection"]), np.nan)
        latency = r["latency_ms_per_query"]
        speedup = ref_latency / latency if np.isfinite(latency) and latency > 0 else np.nan
        key, none = (r["model"], r["collection"]), (np.nan, np.nan)
        d_bm25, p_bm25 = vs_bm25.get(key, none)
        is_mice = row in ("mice-masked", MICE_RETRAINED)  # only MICE rows are tested against late interaction
        late = {}
        for b, vs in vs_late.items():
            late[f"delta_{b}"], late[f"p_{b}"] = vs.get(key, none) if is_mice else none
        rows.append(
            {
                "model": r["model"],
                "collection": r["collection"],
                "domain": r["domain"],
                "n_queries": int(r["n"]),
                "ndcg10": float(r["mean"]),
                "delta": float(r["delta"]),
                "p": float(r["p"]) if not r["reference"] else np.nan,
                "paper_ndcg10": ours_paper,
                "minus_paper": float(r["mean"]) - ours_paper,
                "delta_bm25": d_bm25,
                "p_bm25": p_bm25,
                **late,
                "latency_ms_per_query": float(r["latency_ms_per_query"]),
                "speedup": speedup,
                "paper_speedup": PAPER_SPEEDUP.get(row, np.nan),
                "storage_bytes_per_doc": float(r["storage_bytes_per_doc"]),
                "parameters": int(r["parameters"]),
            }
        )
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(ROWS)}
    # a variant sits right after its paper row
    out["_o"] = out["model"].map(lambda m: 2 * order.get(_paper_row(m), len(order)) + (m != _paper_row(m)))
    return out.sort_values(["_o", "collection"], kind="stable").drop(columns="_o").reset_index(drop=True)


def format_paper(table: pd.DataFrame, missing: dict[str, str] | None = None) -> str:
    """The table as text: per collection 'ours (paper X) p', then latency, speed-up, storage, params."""
    cols = list(dict.fromkeys(table["collection"]))
    w = name_width(table["model"])
    head = f"{'model':{w}s}" + "".join(f"{c + ' nDCG@10':>28s}" for c in cols)
    head += f"{'ms/query':>10s}{'speed-up':>18s}{'KiB/doc':>9s}{'params':>8s}"
    lines = [head]
    for model, part in table.groupby("model", sort=False):
        cells = []
        for c in cols:
            row = part[part["collection"] == c]
            if row.empty:
                cells.append("–")
                continue
            r = row.iloc[0]
            cell = f"{r['ndcg10']:.4f}"
            if not np.isnan(r["paper_ndcg10"]):
                cell += f" [{r['paper_ndcg10']:.3f}]"
            if not np.isnan(r["p"]):
                cell += f" p={_p(r['p'])}"
            cells.append(cell)
        r = part.iloc[0]
        speed = "–" if np.isnan(r["speedup"]) else f"{r['speedup']:.2f}x"
        if not np.isnan(r["paper_speedup"]):
            speed += f" [{r['paper_speedup']:.1f}x]"
        lines.append(
            f"{model:{w}s}"
            + "".join(f"{c:>28s}" for c in cells)
            + f"{fmt_number(r['latency_ms_per_query'], 10, 0)}{speed:>18s}"
            + f"{fmt_number(r['storage_bytes_per_doc'] / 1024, 9, 1)}{r['parameters'] / 1e6:7.1f}M"
        )
    lines.append("[paper's number]: " + PAPER_SOURCE)
    for base, title in (("bm25", "against BM25"), *((b, f"MICE against {b}") for b in LATE_ROWS)):
        if f"p_{base}" in table and table[f"p_{base}"].notna().any():
            lines.append(f"{title} (Δ nDCG@10, paired t-test p):")
            for model, part in table.dropna(subset=[f"p_{base}"]).groupby("model", sort=False):
                cells = [
                    f"{r['collection']} {r[f'delta_{base}']:+.4f} (p={_p(r[f'p_{base}'])})"
                    for _, r in part.iterrows()
                ]
                lines.append(f"  {model:{w}s}" + "   ".join(cells))
    for model, hint in (missing or {}).items():
        lines.append(f"not in this run: {model} ({ROWS[model]}); train it with `{hint}`")
    return "\n".join(lines)


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"
