"""Small but real result tables for the explorer's tests, made with the toolkit's own library on a tiny BERT.

:func:`build_demo` saves a 3-layer random BERT cross-encoder, writes a 12-document BEIR folder and runs
``probe.run``, ``ablations.sweep`` and ``ablations.search`` on them into ``<root>/results``. The MICE
comparison (issue #5 writes the real one) is a hand-made table in the schema docs/app.md documents, with
made-up numbers, marked as a fixture in its manifest.

(Named ``test_*`` like ``test_ablation_support``; its own tests check what it builds.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from test_ablation_support import save_tiny_model, write_tiny_beir

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "main.py"


@dataclass
class Demo:
    root: Path
    model: Path
    beir: Path
    results: Path

    @property
    def probe(self) -> Path:
        return self.results / "probe"

    @property
    def sweep(self) -> Path:
        return self.results / "ablations" / "sweep"

    @property
    def search(self) -> Path:
        return self.results / "ablations" / "search"

    @property
    def mice(self) -> Path:
        return self.results / "mice"


MICE_CONFIG = {  # a MICE configuration (ablations.mice.config, schema_version 1) for the 3-layer tiny model
    "schema_version": 1,
    "kind": "mice-config",
    "base_model": "",
    "num_layers": 3,
    "num_heads": 4,
    "mask": {
        "rules": [{"heads": "all", "interaction": "mice-step3@1", "layers": "all"}],
        "schema_version": 1,
    },
    "merge_layer": 1,
    "drop_layer": 3,
    "doc_positions": "joint",
    "max_length": 64,
    "source": {"preset": "test"},
}


def comparison_table() -> pd.DataFrame:
    """A comparison in the schema ``python -m ablations.compare`` writes (made-up numbers; one collection)."""
    rows = []
    systems = [
        ("cross-encoder", 0.70, 0.62, 10.0, 0.0),
        ("mice-masked", 0.66, 0.58, 9.5, 0.0),
        ("mice-retrained", 0.64, 0.55, 3.0, 12288.0),
        ("maxsim", 0.55, 0.50, 1.0, 49152.0),
        ("lite", 0.60, 0.52, 1.5, 49152.0),
        ("slow-and-bad", 0.40, 0.30, 20.0, 0.0),
    ]
    for name, ndcg, rr, ms, per_doc in systems:
        for i, (measure, value) in enumerate((("nDCG@10", ndcg), ("RR@10", rr))):
            base = (0.70, 0.62)[i]
            rows.append(
                {
                    "model": name,
                    "collection": "beir",
                    "domain": "OOD",
                    "measure": measure,
                    "n": 4,
                    "mean": value,
                    "baseline_mean": base,
                    "delta": value - base,
                    "p": float("nan") if name == "cross-encoder" else (0.004 if value < base - 0.1 else 0.3),
                    "reference": name == "cross-encoder",
                    "latency_ms_per_query": ms,
                    "storage_bytes_per_doc": per_doc,
                    "parameters": 22_000_000,
                }
            )
    return pd.DataFrame(rows)


def build_demo(root: Path, tokenizer) -> Demo:
    from ablations.data.collections import load_collection
    from ablations.experiments.probe import ProbeConfig, probe
    from ablations.experiments.runner import Experiment, Settings
    from ablations.experiments.search import Search, SearchConfig
    from ablations.experiments.sweep import Sweep, SweepConfig
    from ablations.results import manifest, write_table
    from probe.model import CrossEncoder

    root = Path(root)
    model = save_tiny_model(root / "model", tokenizer, layers=3)
    beir = write_tiny_beir(root / "beir")
    demo = Demo(root, model, beir, root / "results")
    probe(
        ProbeConfig(
            model=str(model),
            collection=str(beir),
            queries=4,
            depth=4,
            flow_pairs=1,
            attribution_pairs=2,
            ig_steps=4,
            batch_size=8,
            max_length=64,
            out=str(demo.probe),
        )
    )
    ce = CrossEncoder.from_pretrained(model, max_length=64)
    rs = load_collection(str(beir))
    exp = Experiment(
        ce,
        rs,
        Settings(collection=str(beir), n_boot=200, max_length=64),
        model_label=str(model),
        use_cache=False,
    )
    try:
        Sweep(exp, SweepConfig(interactions=["query2doc", "doc2query", "cls2doc"]), demo.sweep).run()
        Search(exp, SearchConfig(interactions=["query2doc", "doc2query"], tolerance=0.05), demo.search).run()
    finally:
        exp.close()
    write_table(
        comparison_table(),
        demo.mice,
        "comparison",
        manifest(
            kind="mice-compare",
            note="test fixture: made-up numbers",
            settings={"config": str(demo.mice / "mice.json")},
        ),
    )
    (demo.mice / "mice.json").write_text(
        json.dumps({**MICE_CONFIG, "base_model": str(model)}, indent=2) + "\n"
    )
    return demo


def test_demo_tables_are_real_toolkit_output(tmp_path, tokenizer):
    from ablations.results import read_manifest, read_table

    demo = build_demo(tmp_path, tokenizer)
    assert read_manifest(demo.probe, "flows_per_query")["kind"] == "probe"
    fpq = read_table(demo.probe, "flows_per_query")
    assert sorted(fpq["layer"].unique()) == [0, 1, 2] and fpq["query_id"].nunique() == 4
    sweep = read_table(demo.sweep, "summary")
    assert read_manifest(demo.sweep, "summary")["kind"] == "ablation-sweep"
    assert set(sweep["cell_interaction"]) == {"query2doc", "doc2query", "cls2doc"}
    assert set(sweep["cell_layers"]) == {"0", "1", "2"}
    doc = json.loads((demo.search / "search.json").read_text())
    assert {"removed", "surviving", "final"} <= set(doc)
    assert read_table(demo.mice, "comparison")["model"].nunique() == 6
