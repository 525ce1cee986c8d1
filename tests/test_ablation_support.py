"""Helpers shared by the ablation tests: a tiny BEIR collection and a tiny saved cross-encoder.

(Named ``test_*`` so it lives with the ablation tests; its own test checks the helpers.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DOCS = {
    "d1": "Paris is the capital and largest city of France.",
    "d2": "Berlin is the capital of Germany and its largest city.",
    "d3": "The capital of Italy is Rome, an ancient city.",
    "d4": "Vaccines train the immune system to recognise a pathogen.",
    "d5": "How vaccines work: they expose the body to a harmless antigen.",
    "d6": "The stock market fell sharply on Monday after the report.",
    "d7": "Flu symptoms include fever, cough and a sore throat.",
    "d8": "Common symptoms of the flu are muscle aches and fatigue.",
    "d9": "France borders Spain, Italy, Germany and Belgium.",
    "d10": "The immune system protects the body against disease.",
    "d11": "A cold has milder symptoms than the flu.",
    "d12": "Markets in Europe rose as the capital flowed back.",
}
QUERIES = {
    "q1": "capital of france",
    "q2": "how do vaccines work",
    "q3": "flu symptoms",
    "q4": "stock market",
}
QRELS = [
    ("q1", "d1", 2),
    ("q1", "d9", 1),
    ("q2", "d4", 2),
    ("q2", "d5", 2),
    ("q2", "d10", 1),
    ("q3", "d7", 2),
    ("q3", "d8", 2),
    ("q3", "d11", 1),
    ("q4", "d6", 2),
    ("q4", "d12", 1),
]


def write_tiny_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
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


def save_tiny_model(path: Path, tokenizer, *, layers: int = 3, seed: int = 0) -> Path:
    from conftest import make_tiny_bert

    from probe.model import CrossEncoder

    CrossEncoder(make_tiny_bert(tokenizer, layers=layers, seed=seed), tokenizer, max_length=64).save(path)
    return path


def cli_env(cache: Path) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "MICE_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    env.pop("MICE_MODEL", None)
    return env


def run_cli(module: str, args: list[str], cache: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=cli_env(cache),
        check=False,
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 300),
        **kw,
    )


def test_tiny_beir_loads_with_bm25_candidates(tmp_path):
    from ablations.data.collections import load_collection

    rs = load_collection(str(write_tiny_beir(tmp_path / "tiny")))
    assert set(rs.queries) == set(QUERIES) and len(rs.candidates) >= 8
    assert set(rs.qrels["doc_id"]) <= set(DOCS)
