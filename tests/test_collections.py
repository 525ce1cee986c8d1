import gzip
import json

import pytest

from ablations.data import readers
from ablations.data.collections import RerankSet, load_collection
from ablations.evaluation.measures import aggregate, evaluate_runs
from probe.errors import BadInput


def write_beir(root, *, qrels_ids=("q1", "q2")):
    (root / "qrels").mkdir(parents=True)
    docs = {
        "d1": "paris is the capital of france",
        "d2": "berlin is the capital of germany",
        "d3": "vaccines train the immune system",
        "d4": "the stock market fell",
    }
    with gzip.open(root / "corpus.jsonl.gz", "wt") as fh:
        for i, t in docs.items():
            fh.write(json.dumps({"_id": i, "title": "", "text": t}) + "\n")
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "capital of france"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "how do vaccines work"})
        + "\n"
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + f"{qrels_ids[0]}\td1\t1\n{qrels_ids[1]}\td3\t1\n"
    )
    return root


def test_beir_folder_gets_bm25_candidates(tmp_path):
    rs = load_collection(str(write_beir(tmp_path / "beir")))
    assert set(rs.queries) == {"q1", "q2"}
    top = rs.candidates.sort_values(["query_id", "rank"]).groupby("query_id").head(1)
    assert dict(zip(top["query_id"], top["doc_id"])) == {"q1": "d1", "q2": "d3"}
    table = evaluate_runs({"bm25": rs.candidates}, rs)
    assert aggregate(table)["nDCG@10"].iloc[0] == pytest.approx(1.0)


def test_qrels_matching_no_query_are_refused(tmp_path):
    with pytest.raises(BadInput, match="no qrels query id matches"):
        load_collection(str(write_beir(tmp_path / "beir", qrels_ids=("x1", "x2"))))


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "qrels.txt"
    bad.write_text("1 0 d1 2\n1 0 d2\n")
    with pytest.raises(BadInput, match=r"qrels.txt:2: expected TREC qrels"):
        readers.read_trec_qrels(bad)
    bad.write_text("1 0 d1 high\n")
    with pytest.raises(BadInput, match="grade 'high' is not an integer"):
        readers.read_trec_qrels(bad)
    with pytest.raises(BadInput, match="does not exist"):
        readers.read_trec_run(tmp_path / "missing.trec")
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 d1 1 2.5 bm25\n1 Q0 d2 2 x bm25\n")
    with pytest.raises(BadInput, match="run.trec:2"):
        readers.read_trec_run(run)
    corrupt = tmp_path / "c.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(BadInput, match="cannot read"):
        readers.read_beir_corpus(corrupt)


def test_unknown_collection_lists_valid_names():
    with pytest.raises(BadInput, match="unknown collection 'dl2019'; expected one of dl19, dl20"):
        load_collection("dl2019")


def test_trec_run_round_trip(tmp_path):
    import pandas as pd

    run = pd.DataFrame({"query_id": ["1", "1", "2"], "doc_id": ["a", "b", "c"], "score": [0.1, 0.9, 0.5]})
    readers.write_trec_run(run, tmp_path / "r.trec", "test")
    back = readers.read_trec_run(tmp_path / "r.trec")
    assert back[back["query_id"] == "1"]["doc_id"].tolist() == ["b", "a"]
    assert back["rank"].tolist() == [1, 2, 1]


def test_empty_candidate_document_is_refused():
    import pandas as pd

    cand = pd.DataFrame({"query_id": ["1"], "doc_id": ["d"], "rank": [1], "score": [1.0]})
    qrels = pd.DataFrame({"query_id": ["1"], "doc_id": ["d"], "relevance": [1]})
    with pytest.raises(BadInput, match="document 'd' is empty"):
        RerankSet("t", {"1": "q"}, {"d": "  "}, cand, qrels)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, queries, bm25_ndcg", [("dl19", 43, 0.5058), ("dl20", 54, 0.4796), ("dl21", 53, 0.4458)]
)
def test_real_trec_dl_collections_reproduce_published_bm25(name, queries, bm25_ndcg):
    rs = load_collection(name)
    assert len(rs.queries) == queries
    assert len(rs.candidates) == queries * 100
    ndcg = aggregate(evaluate_runs({"bm25": rs.candidates}, rs))["nDCG@10"].iloc[0]
    assert ndcg == pytest.approx(bm25_ndcg, abs=1e-4)


@pytest.mark.slow
def test_real_scifact_bm25s_is_in_the_published_range():
    rs = load_collection("beir/scifact/test")
    assert len(rs.queries) == 300
    ndcg = aggregate(evaluate_runs({"bm25": rs.candidates}, rs))["nDCG@10"].iloc[0]
    assert 0.62 < ndcg < 0.70  # published BM25 on SciFact: 0.665-0.679
