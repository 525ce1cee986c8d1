"""Readers for the plain file formats of IR collections. Each error names the file, line and format.

Tables use ir_measures' column names: ``query_id``, ``doc_id``, ``relevance``, ``score``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from probe.errors import BadInput


def _open(path: Path) -> io.TextIOBase:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"collection file {str(path)!r} does not exist")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with _open(path) as fh:
            for n, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {str(path)!r}: {exc}") from None


def read_tsv_queries(path: Path) -> dict[str, str]:
    """``qid<TAB>text`` per line (MS MARCO / TREC DL topics)."""
    out = {}
    for n, line in _lines(path):
        parts = line.split("\t")
        if len(parts) < 2:
            raise BadInput(f"{path}:{n}: expected 'qid<TAB>query', got {line[:80]!r}")
        out[parts[0].strip()] = parts[1].strip()
    return out


def read_tsv_passages(path: Path) -> dict[str, str]:
    """``pid<TAB>text`` per line (MS MARCO collection layout)."""
    out = {}
    for n, line in _lines(path):
        pid, sep, text = line.partition("\t")
        if not sep:
            raise BadInput(f"{path}:{n}: expected 'pid<TAB>passage', got {line[:80]!r}")
        out[pid.strip()] = text
    return out


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(path):
        try:
            yield n, json.loads(line)
        except ValueError:
            raise BadInput(f"{path}:{n}: not a JSON object: {line[:80]!r}") from None


def read_jsonl_passages(path: Path, id_key: str = "pid", text_key: str = "text") -> dict[str, str]:
    out = {}
    for n, obj in read_jsonl(path):
        if id_key not in obj or text_key not in obj:
            raise BadInput(f"{path}:{n}: expected keys {id_key!r} and {text_key!r}")
        out[str(obj[id_key])] = obj[text_key]
    return out


def read_trec_qrels(path: Path) -> pd.DataFrame:
    """TREC qrels ``qid iter docid grade`` (whitespace separated)."""
    rows = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 4:
            raise BadInput(f"{path}:{n}: expected TREC qrels 'qid 0 docid grade', got {line[:80]!r}")
        try:
            rows.append((parts[0], parts[2], int(parts[3])))
        except ValueError:
            raise BadInput(f"{path}:{n}: relevance grade {parts[3]!r} is not an integer") from None
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"])


def read_beir_qrels(path: Path) -> pd.DataFrame:
    """BEIR ``query-id<TAB>corpus-id<TAB>score`` with a header line."""
    rows = []
    for n, line in _lines(path):
        parts = line.split("\t")
        if n == 1 and parts[0] == "query-id":
            continue
        if len(parts) != 3:
            raise BadInput(
                f"{path}:{n}: expected BEIR qrels 'query-id<TAB>corpus-id<TAB>score', got {line[:80]!r}"
            )
        try:
            rows.append((parts[0], parts[1], int(parts[2])))
        except ValueError:
            raise BadInput(f"{path}:{n}: relevance {parts[2]!r} is not an integer") from None
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"])


def read_trec_run(path: Path) -> pd.DataFrame:
    """TREC run ``qid Q0 docid rank score tag``."""
    rows = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise BadInput(f"{path}:{n}: expected TREC run 'qid Q0 docid rank score tag', got {line[:80]!r}")
        try:
            rows.append((parts[0], parts[2], int(parts[3]), float(parts[4])))
        except ValueError:
            raise BadInput(f"{path}:{n}: rank/score not numeric in {line[:80]!r}") from None
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"])


def read_top1000_tsv(path: Path) -> tuple[pd.DataFrame, dict[str, str], dict[str, str]]:
    """MS MARCO ``top1000`` layout ``qid<TAB>pid<TAB>query<TAB>passage``, lines in rank order.

    Returns the candidate run (rank from line order, score = -rank), the query texts and the passage texts.
    """
    rows, queries, passages = [], {}, {}
    rank: dict[str, int] = {}
    for n, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 4:
            raise BadInput(
                f"{path}:{n}: expected 'qid<TAB>pid<TAB>query<TAB>passage', got {len(parts)} fields"
            )
        qid, pid, query, passage = parts
        rank[qid] = rank.get(qid, 0) + 1
        rows.append((qid, pid, rank[qid], -float(rank[qid])))
        queries[qid] = query
        passages[pid] = passage
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"]), queries, passages


def read_beir_corpus(path: Path) -> dict[str, str]:
    """BEIR ``corpus.jsonl[.gz]``: ``{"_id", "title", "text"}``; title and text joined by a space."""
    out = {}
    for n, obj in read_jsonl(path):
        if "_id" not in obj or "text" not in obj:
            raise BadInput(f"{path}:{n}: expected BEIR corpus keys '_id' and 'text'")
        title = (obj.get("title") or "").strip()
        out[str(obj["_id"])] = f"{title} {obj['text']}".strip() if title else obj["text"]
    return out


def read_beir_queries(path: Path) -> dict[str, str]:
    out = {}
    for n, obj in read_jsonl(path):
        if "_id" not in obj or "text" not in obj:
            raise BadInput(f"{path}:{n}: expected BEIR query keys '_id' and 'text'")
        out[str(obj["_id"])] = obj["text"]
    return out


def write_trec_run(run: pd.DataFrame, path: Path, tag: str) -> None:
    """Write ``query_id, doc_id, score`` as a TREC run (ranks recomputed from scores), atomically.

    Scores are written losslessly (``repr`` of the float: it reads back bit-identical), so a metric computed
    from the file (trec_eval, ir_measures) breaks ties exactly as the in-memory run and equals the
    toolkit's."""
    from ablations.results import atomic_write_text

    ranked = run.sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
    ranks = ranked.groupby("query_id").cumcount() + 1
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=" ", lineterminator="\n")
    for (qid, did, score), rank in zip(
        ranked[["query_id", "doc_id", "score"]].itertuples(index=False), ranks
    ):
        writer.writerow([qid, "Q0", did, int(rank), repr(float(score)), tag])
    atomic_write_text(path, buf.getvalue())
