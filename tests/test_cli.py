"""The foundation CLIs: bad input gives one line and exit 2; a real evaluation writes the results format."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from scipy import stats as sps

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for f in fragments:
        assert f in lines[0]


@pytest.fixture
def tiny_model_dir(tiny_ce, tmp_path):
    tiny_ce.save(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_unknown_model_path(tmp_path):
    assert_one_line_error(run("ablations.evaluate", "--model", str(tmp_path / "missing")), "does not exist")


def test_unknown_collection(tiny_model_dir):
    assert_one_line_error(
        run("ablations.evaluate", "--model", tiny_model_dir, "--collection", "trec99"),
        "unknown collection 'trec99'",
        "dl19",
    )


def test_unknown_training_preset():
    assert_one_line_error(run("ablations.train", "--preset", "imagenet"), "unknown preset 'imagenet'", "dl19")


def test_missing_reference_model_says_how_to_train_it(tmp_path):
    env = {**ENV, "MICE_CACHE": str(tmp_path / "cache"), "MICE_SHARED": str(tmp_path / "shared")}
    (tmp_path / "shared" / "models").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "ablations.evaluate"], capture_output=True, text=True, env=env
    )
    assert_one_line_error(proc, "python -m ablations.train --preset dl19")


@pytest.mark.slow
def test_evaluate_writes_metrics_runs_and_manifest(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = run(
        "ablations.evaluate",
        "--model",
        tiny_model_dir,
        "--collection",
        "dl19",
        "--queries",
        "3",
        "--depth",
        "10",
        "--max-length",
        "64",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "bm25" in proc.stdout and "cross-encoder" in proc.stdout
    table = pd.read_parquet(out / "metrics.parquet")
    assert set(table["run"]) == {"bm25", "cross-encoder"}
    assert table["query_id"].nunique() == 3
    assert set(table["measure"]) == {"nDCG@10", "RR(rel=2)@10", "R(rel=2)@100"}
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["model"] == tiny_model_dir and meta["collections"][0]["queries"] == 3
    run_lines = (out / "dl19.cross-encoder.trec").read_text().splitlines()
    assert len(run_lines) == 30 and run_lines[0].split()[3] == "1"
    # one model: tested against BM25 alone, equal to a paired t-test on the metrics table, and printed
    st = pd.read_parquet(out / "stats.parquet")
    assert set(zip(st["run"], st["against"])) == {("cross-encoder", "bm25")}
    nd = table[table["measure"] == "nDCG@10"].pivot(index="query_id", columns="run", values="value")
    row = st[st["measure"] == "nDCG@10"].iloc[0]
    assert row["delta"] == pytest.approx((nd["cross-encoder"] - nd["bm25"]).mean())
    assert row["p"] == pytest.approx(sps.ttest_rel(nd["cross-encoder"], nd["bm25"]).pvalue, nan_ok=True)
    assert json.loads((out / "stats.json").read_text())["kind"] == "evaluate-stats"
    assert "cross-encoder vs bm25" in proc.stdout and "paired t-test" in proc.stdout


@pytest.mark.slow
def test_evaluate_several_models_side_by_side_with_paired_tests(tiny_model_dir, tiny_ce_factory, tmp_path):
    """Two --model: both re-rank the same candidates, runs named after the models, and stats.parquet holds
    each run against BM25 and against the first model, equal to a paired t-test on the metrics table."""
    other = tmp_path / "other" / "tiny"  # a second tiny BERT (another seed), the same folder name
    tiny_ce_factory(seed=1).save(other)
    out = tmp_path / "out"
    common = ["--collection", "dl19", "--queries", "6", "--depth", "10", "--max-length", "64"]
    proc = run(
        "ablations.evaluate", "--model", tiny_model_dir, "--model", str(other), *common, "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(out / "metrics.parquet")
    assert set(table["run"]) == {"bm25", "tiny", "tiny-2"}
    st = pd.read_parquet(out / "stats.parquet")
    pairs = set(zip(st["run"], st["against"]))
    assert pairs == {("tiny", "bm25"), ("tiny-2", "bm25"), ("tiny-2", "tiny")}
    nd = table[table["measure"] == "nDCG@10"].pivot(index="query_id", columns="run", values="value")
    row = st[(st["measure"] == "nDCG@10") & (st["run"] == "tiny-2") & (st["against"] == "tiny")].iloc[0]
    assert row["delta"] == pytest.approx((nd["tiny-2"] - nd["tiny"]).mean())
    assert row["p"] == pytest.approx(sps.ttest_rel(nd["tiny-2"], nd["tiny"]).pvalue, nan_ok=True)
    meta = json.loads((out / "stats.json").read_text())
    assert meta["kind"] == "evaluate-stats" and meta["models"]["tiny-2"] == str(other)
    assert "paired t-test" in proc.stdout and (out / "dl19.tiny-2.trec").is_file()


@pytest.mark.parametrize(
    "module, extra",
    [
        ("ablations.evaluate", []),
        ("ablations.run", ["--remove", "doc2query"]),
        ("ablations.sweep", []),
        ("ablations.search", []),
        ("ablations.compare", ["--config", "x.json"]),
        ("probe.run", []),
    ],
)
def test_an_out_that_is_a_file_is_refused_before_any_model_work(module, extra, tmp_path):
    """The output folder is checked first: the model named here does not exist, and it is not what is
    reported."""
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    model = "--reference" if module == "ablations.compare" else "--model"
    proc = run(module, *extra, model, str(tmp_path / "missing-model"), "--out", str(taken))
    assert_one_line_error(proc, "--out", "is a file")


def test_file_outputs_are_checked_before_work(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert_one_line_error(
        run(
            "ablations.export",
            "--from",
            "mice-l2+3",
            "--model",
            str(tmp_path / "missing"),
            "--out",
            str(folder),
        ),
        "--out",
        "is a folder",
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(
        run("reports.build", "--results", str(tmp_path), "--out", str(blocker / "r.html")),
        "--out",
        "is a file, not a folder",
    )


def test_a_bad_second_collection_writes_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = run(
        "ablations.evaluate",
        "--model",
        tiny_model_dir,
        "--collection",
        "dl19",
        "--collection",
        str(tmp_path / "no-such-beir"),
        "--queries",
        "2",
        "--depth",
        "3",
        "--out",
        str(out),
    )
    assert_one_line_error(proc)
    assert not out.exists() or not any(out.iterdir())


def test_reports_refuse_an_unknown_measure(tmp_path):
    assert_one_line_error(
        run(
            "reports.build",
            "--results",
            str(tmp_path),
            "--out",
            str(tmp_path / "r.html"),
            "--measure",
            "BOGUS@1",
        ),
        "unknown measure 'BOGUS@1'",
    )


@pytest.mark.parametrize(
    "module,argv,needle",
    [
        ("ablations.run", ["--remove", "doc2qry"], "unknown interaction 'doc2qry'"),
        ("ablations.run", ["--remove", "doc2query", "--layers", "7-2"], "malformed layers range '7-2'"),
        ("ablations.sweep", ["--interactions", "nope"], "unknown interaction 'nope'"),
        ("ablations.sweep", ["--layer-units", "3-1"], "malformed layers range '3-1'"),
        ("ablations.search", ["--interactions", "q2d"], "unknown interaction 'q2d'"),
        ("probe.run", ["--layers", "5-1"], "malformed layers range '5-1'"),
        ("probe.run", ["--heads", "x"], "malformed heads range 'x'"),
        ("probe.run", ["--queries", "0"], "--queries 0 must be >= 1"),
    ],
)
def test_a_bad_interaction_or_range_is_answered_before_torch_is_imported(module, argv, needle, tmp_path):
    """The syntax is checked right after parsing: one line, exit 2, and torch (seconds of imports) never
    loaded."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['x', *{argv!r}, '--out', {str(tmp_path / 'out')!r}]\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.stdout.split() == ["2", "False"], (proc.stdout, proc.stderr)
    assert_one_line_error(subprocess.CompletedProcess([], 2, "", proc.stderr), needle)
    assert not (tmp_path / "out").exists()


def test_the_light_cli_defaults_equal_the_statistics_defaults():
    from ablations import cliargs
    from ablations.evaluation import stats

    assert (cliargs.DEFAULT_BOOTSTRAP, cliargs.DEFAULT_TIE_TOL) == (
        stats.DEFAULT_BOOTSTRAP,
        stats.DEFAULT_TIE_TOL,
    )


@pytest.mark.slow
def test_progress_goes_to_a_log_as_lines_and_no_progress_silences_it(tiny_model_dir, tmp_path):
    """With stderr a file (not a terminal) the scoring progress arrives as plain lines, not carriage-return
    redraws; --no-progress prints none."""
    common = ["--model", tiny_model_dir, "--queries", "2", "--depth", "5"]
    env = {**ENV, "MICE_PROGRESS_INTERVAL": "0"}
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "ablations.evaluate", *common, "--out", str(tmp_path / "a")],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            timeout=600,
        )
    assert proc.returncode == 0
    lines = (tmp_path / "log").read_text()
    assert "\r" not in lines
    scoring = [ln for ln in lines.splitlines() if ln.startswith("scoring tiny:")]
    assert scoring and "10/10" in scoring[-1], lines
    quiet = run("ablations.evaluate", *common, "--out", str(tmp_path / "b"), "--no-progress")
    assert quiet.returncode == 0 and "scoring" not in quiet.stderr, quiet.stderr
