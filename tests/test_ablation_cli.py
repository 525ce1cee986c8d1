"""The CLIs: bad input (one line, exit 2), clamping notice, an end-to-end run, and sweep kill/resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from test_ablation_support import REPO, cli_env, run_cli, save_tiny_model, write_tiny_beir

from ablations import run as run_cli_module
from ablations import sweep as sweep_cli_module


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("ablation-cli")
    return {
        "model": save_tiny_model(root / "tiny-model", tokenizer, layers=3),
        "collection": write_tiny_beir(root / "tiny-beir"),
        "cache": root / "cache",
        "root": root,
    }


def _exit_line(capsys, main, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--remove", "doc2qry"], "unknown interaction 'doc2qry'; valid: query2doc, doc2query"),
        (["--remove", "doc2query", "--layers", "7-2"], "malformed layers range '7-2'"),
        (["--remove", "doc2query", "--layers", "a-b"], "malformed layers range 'a-b'"),
        (["--remove", "doc2query", "--layers", "7-9"], "starts at layer 7, beyond the last layer 2"),
        (["--remove", "doc2query", "--heads", "9"], "starts at head 9, beyond the last head 3"),
        ([], "empty mask"),
        (["--remove", "doc2query:0-1:x"], "malformed heads range 'x'"),
        (["--remove", "doc2query", "--queries", "0"], "--queries 0 must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(world, capsys, monkeypatch, argv, needle):
    monkeypatch.setenv("MICE_CACHE", str(world["cache"]))
    code, err = _exit_line(
        capsys,
        run_cli_module.main,
        [
            *argv,
            "--model",
            str(world["model"]),
            "--collection",
            str(world["collection"]),
            "--out",
            str(world["root"] / "bad"),
        ],
    )
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert needle in err, err


def test_missing_reference_model_says_how_to_train(world, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MICE_SHARED", str(tmp_path / "empty-shared"))
    monkeypatch.delenv("MICE_MODEL", raising=False)
    code, err = _exit_line(capsys, run_cli_module.main, ["--remove", "doc2query"])
    assert code == 2 and "\n" not in err
    assert "python -m ablations.train --preset dl19" in err and "--model" in err


def test_sweep_bad_input(world, capsys, monkeypatch):
    monkeypatch.setenv("MICE_CACHE", str(world["cache"]))
    common = [
        "--model",
        str(world["model"]),
        "--collection",
        str(world["collection"]),
        "--out",
        str(world["root"] / "bad-sweep"),
    ]
    for argv, needle in (
        (["--interactions", "nope"], "unknown interaction 'nope'"),
        (["--layer-units", "3-1"], "malformed layers range '3-1'"),
        (["--head-groups", "4-9"], "starts at head 4, beyond the last head 3"),
    ):
        code, err = _exit_line(capsys, sweep_cli_module.main, [*argv, *common])
        assert code == 2 and needle in err and "\n" not in err, err


def test_cli_subprocess_exit_code_and_clamped_run(world):
    bad = run_cli("ablations.run", ["--remove", "doc2qry"], world["cache"])
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("error: unknown interaction 'doc2qry'")
    out = world["root"] / "run-out"
    run_args = [
        "--remove",
        "doc2query",
        "--layers",
        "0-6",
        "--remove",
        "cls2doc:1",
        "--model",
        str(world["model"]),
        "--collection",
        str(world["collection"]),
        "--out",
        str(out),
    ]
    ok = run_cli("ablations.run", run_args, world["cache"])
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "layers 0-6 → 0-2: the model has 3 layers"
    assert any(line.split()[0] == "nDCG@10" for line in lines if line.strip())
    summary = pd.read_parquet(out / "summary.parquet")
    # the full and the ablated model against BM25 (the candidates' order), as stored
    nd = summary[summary["measure"] == "nDCG@10"].iloc[0]
    bm25_line = next(line for line in lines if line.split()[:2] == ["nDCG@10", "BM25"])
    assert f"BM25 {nd['bm25_mean']:.4f}" in bm25_line and f"ablated {nd['delta_bm25']:+.4f}" in bm25_line
    assert (
        set(summary["measure"]) >= {"nDCG@10"}
        and summary["spec_label"].iloc[0] == "doc2query[0-6] + cls2doc[1]"
    )
    again = run_cli("ablations.run", run_args, world["cache"])
    assert again.returncode == 0 and "already in" in again.stdout
    assert len(pd.read_parquet(out / "summary.parquet")) == len(summary)
    assert "added the columns against BM25" not in again.stdout
    # a run stored before the BM25 columns existed: the same command adds them, rescoring nothing
    for table in ("summary", "per_query"):
        df = pd.read_parquet(out / f"{table}.parquet")
        df.drop(columns=[c for c in df if "bm25" in c]).to_parquet(out / f"{table}.parquet")
    older = run_cli("ablations.run", run_args, world["cache"])
    assert older.returncode == 0 and "added the columns against BM25" in older.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(out / "summary.parquet"), summary)


def test_sweep_resumes_after_kill_9(world):
    args = [
        "--interactions",
        "doc2query",
        "cls2doc",
        "query2doc",
        "--model",
        str(world["model"]),
        "--collection",
        str(world["collection"]),
        "--bootstrap",
        "200",
        "--no-progress",
    ]
    ref_dir, dir_ = world["root"] / "sweep-ref", world["root"] / "sweep-killed"
    ref = run_cli("ablations.sweep", [*args, "--out", str(ref_dir)], world["cache"])
    assert ref.returncode == 0, ref.stderr
    table = pd.read_parquet(ref_dir / "summary.parquet")
    nd = table[table["measure"] == "nDCG@10"]
    below = int(((nd["delta_bm25"] < 0) & (nd["p_bm25"] < 0.05)).sum())
    assert f"the full model {nd['baseline_delta_bm25'].iloc[0]:+.4f}" in ref.stdout
    assert f"{below} of 9 cells significantly below BM25" in ref.stdout

    env = cli_env(world["cache"])
    env["MICE_SWEEP_CELL_DELAY"] = "30"  # each finished cell waits: the kill lands mid-sweep
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablations.sweep", *args, "--out", str(dir_)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cells = dir_ / "cells"
    deadline = time.time() + 240
    while time.time() < deadline and not list(cells.glob("*.summary.parquet")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished = sorted(cells.glob("*.summary.parquet"))
    assert 1 <= len(finished) < 9
    for f in dir_.rglob("*.parquet"):  # nothing truncated
        pd.read_parquet(f)
    stamps = {f: f.stat().st_mtime_ns for f in finished}

    resumed = run_cli("ablations.sweep", [*args, "--out", str(dir_)], world["cache"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"({len(finished)} already done)" in resumed.stdout
    assert f"{9 - len(finished)} cells computed" in resumed.stdout
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())  # finished cells were not recomputed
    for table in ("summary", "per_query"):
        # git_revision names the code each run started with: a commit made while this test runs changes it
        a, b = (pd.read_parquet(d / f"{table}.parquet").drop(columns="git_revision") for d in (ref_dir, dir_))
        pd.testing.assert_frame_equal(a, b)
    assert len(pd.read_parquet(dir_ / "summary.parquet")["cell"].unique()) == 9
    assert not list(dir_.rglob(".*.tmp"))


def test_list_prints_the_vocabulary(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli_module.main(["--list"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "doc2query" in out and "mice-step3@K" in out and "query2doc[0-1]" in out
