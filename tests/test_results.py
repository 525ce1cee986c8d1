import json
import platform

import pandas as pd
import pytest

from ablations.results import (
    append_table,
    atomic_write_text,
    cpu_model,
    manifest,
    read_manifest,
    read_table,
    write_table,
)
from probe.errors import BadInput


def test_write_append_read(tmp_path):
    df = pd.DataFrame({"query_id": ["1", "2"], "value": [0.5, 0.7]})
    write_table(df, tmp_path, "t", manifest(kind="test"))
    append_table(df.assign(value=[0.1, 0.2]), tmp_path, "t", manifest(kind="test"))
    back = read_table(tmp_path, "t")
    assert back["value"].tolist() == [0.5, 0.7, 0.1, 0.2]
    meta = read_manifest(tmp_path, "t")
    assert meta["rows"] == 4 and len(meta["runs"]) == 1 and meta["git_revision"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_unreadable_table_and_foreign_manifest(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInput, match="is unreadable"):
        read_table(tmp_path, "bad")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(BadInput, match="schema_version 99"):
        read_manifest(tmp_path, "old")


def test_result_files_honour_the_umask(tmp_path):
    """Colleagues can read a shared results folder: files get the umask's mode, not mkstemp's 0600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_table(pd.DataFrame({"a": [1]}), tmp_path, "t", manifest(kind="test"))
        atomic_write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(old)
    for name in ("t.parquet", "t.json", "note.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_trec_run_round_trips_scores_and_metrics_exactly(tmp_path):
    """Scores 1e-7 apart stay apart in the written run; metrics from the file equal the in-memory ones."""
    import numpy as np

    from ablations.data.readers import read_trec_run, write_trec_run
    from ablations.evaluation.measures import per_query

    rng = np.random.default_rng(0)
    base = np.float32(3.0)
    scores = (base + rng.integers(0, 5, 40) * np.float32(2.5e-7)).astype(np.float32)  # near-ties
    run = pd.DataFrame(
        {"query_id": np.repeat(["q1", "q2"], 20), "doc_id": [f"d{i}" for i in range(40)], "score": scores}
    )
    qrels = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q2"],
            "doc_id": ["d3", "d11", "d25", "d39"],
            "relevance": [2, 1, 3, 1],
        }
    )
    write_trec_run(run, tmp_path / "r.trec", "t")
    back = read_trec_run(tmp_path / "r.trec")
    merged = run.merge(back, on=["query_id", "doc_id"])
    assert (merged["score_x"].astype(float).to_numpy() == merged["score_y"].to_numpy()).all()
    measures = ["nDCG@10", "RR@10", "R@20"]
    pd.testing.assert_frame_equal(
        per_query(run, qrels, measures), per_query(back, qrels, measures), check_exact=True
    )


def test_saved_weights_and_indexes_are_made_shareable(tmp_path):
    """safetensors writes 0600; ``shareable`` gives a file or a whole model folder the umask's mode (used by
    the MaxSim/LITE save and the document-state index)."""
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    from ablations.results import shareable

    (tmp_path / "m" / "encoder").mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m" / "head.safetensors"))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "m" / "encoder" / "model.safetensors"))
    assert (
        stat.S_IMODE((tmp_path / "m" / "head.safetensors").stat().st_mode) == 0o600
    )  # what safetensors does
    old = os.umask(0o022)
    try:
        shareable(tmp_path / "m")
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").rglob("*.safetensors")}
    assert modes == {0o644}


def test_cpu_model_names_the_cpu_not_the_architecture(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n"
    )
    monkeypatch.setattr(platform, "processor", lambda: "x86_64")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) Gold 6338"
    assert cpu_model(tmp_path / "missing") == "x86_64"  # no cpuinfo: the architecture, no error
    monkeypatch.setattr(platform, "processor", lambda: "Apple M2")
    assert cpu_model(cpuinfo) == "Apple M2"
    assert manifest(kind="test")["environment"]["processor"]
