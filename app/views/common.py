"""What every view shares: the sidebar's choices, the current pair, and errors shown as messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app import data
from probe.model import CrossEncoder

EXAMPLE_QUERY = "what is a cross-encoder"
EXAMPLE_DOC = (
    "A cross-encoder reads the query and the document together in one transformer and outputs a "
    "relevance score; every query token can attend to every document token."
)


@dataclass
class Context:
    """The sidebar's choices."""

    model: str  # a name of ablations.paths.resolve_model or a local folder; "" = the default
    collection: str  # a collection name or a BEIR folder; "" = type pairs by hand
    results: Path  # root folder of the results tables
    max_length: int | None = None  # None: the model folder's own (sentence_bert_config.json), else 256

    def load_model(self, name: str | None = None) -> tuple[CrossEncoder, str, str] | None:
        """The model (the sidebar's, or ``name``), its path and its cache key; ``None`` (with a message in
        the page) if it cannot load."""
        name = name or self.model
        try:
            path = data.resolve(name)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
            st.error(f"Model not available: {data.message(exc)}", icon="⚠️")
            return None
        try:
            with st.spinner(f"Loading model {path} …", show_time=True):
                ce, path = data.load_model(name, self.max_length)
        except Exception as exc:  # noqa: BLE001
            st.error(f"The model failed to load: {data.message(exc)}", icon="⚠️")
            return None
        return ce, path, f"{path}|{ce.max_length}"


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn any error in the block into one readable message in the page (never a traceback)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - st.stop()/st.rerun() are BaseExceptions and pass through
        st.error(f"{what}: {data.message(exc)}", icon="⚠️")


# ------------------------------------------------------------------------------------ current pair
QUERY_KEY, DOC_KEY = "pair_query", "pair_doc"


def current_pair() -> tuple[str, str]:
    """The pair the Pair and Ablation views work on (kept across views)."""
    return st.session_state.get(QUERY_KEY, EXAMPLE_QUERY), st.session_state.get(DOC_KEY, EXAMPLE_DOC)


def set_pair(query: str, doc: str) -> None:
    st.session_state[QUERY_KEY] = query
    st.session_state[DOC_KEY] = doc


def pair_inputs(prefix: str) -> tuple[str, str]:
    """Text areas for the current pair; edits are kept for the other views."""
    q, d = current_pair()
    wq, wd = f"{prefix}_query_input", f"{prefix}_doc_input"
    # Widget state is dropped while a view is hidden: seed the widgets from the shared pair.
    if (
        wq not in st.session_state
        or wd not in st.session_state
        or st.session_state.get(f"{wq}_seen") != (q, d)
    ):
        st.session_state[wq], st.session_state[wd] = q, d
    query = st.text_area("Query", key=wq, height=68)
    doc = st.text_area("Document", key=wd, height=140)
    set_pair(query, doc)
    st.session_state[f"{wq}_seen"] = (query, doc)
    return query, doc


def check_pair(query: str, doc: str) -> bool:
    """A message instead of a computation when the query or the document is empty."""
    missing = [name for name, text in (("query", query), ("document", doc)) if not text or not text.strip()]
    if missing:
        st.warning(
            f"The {' and the '.join(missing)} {'is' if len(missing) == 1 else 'are'} empty: type some text "
            "(or pick a pair from a collection) to score it.",
            icon="✏️",
        )
        return False
    return True


def pick_pair(ctx: Context) -> None:
    """Query and BM25-candidate pickers over the sidebar's collection; picking sets the current pair
    (shared by the Pair and Ablation views)."""
    if not ctx.collection:
        st.caption("Choose a collection in the sidebar to pick pairs from it, or type a pair below.")
        return
    with st.spinner(f"Loading collection {ctx.collection} …", show_time=True):
        rs = data.collection(ctx.collection)
    qids = rs.query_ids
    if not qids:
        st.info(f"Collection {rs.name} has no judged query with candidates.")
        return
    relevance = {
        (q, d): r for q, d, r in rs.qrels[["query_id", "doc_id", "relevance"]].itertuples(index=False)
    }

    def candidates(qid: str) -> list[str]:
        c = rs.candidates[rs.candidates["query_id"] == qid].sort_values("rank")
        return c["doc_id"].tolist()

    def picked_query() -> None:
        qid = st.session_state["pick_qid"]
        docs = candidates(qid)
        st.session_state["pick_did"] = docs[0]
        set_pair(rs.queries[qid], rs.docs[docs[0]])

    def picked_doc() -> None:
        qid, did = st.session_state["pick_qid"], st.session_state["pick_did"]
        set_pair(rs.queries[qid], rs.docs[did])

    if st.session_state.get("pair_from") != rs.name:  # first visit with this collection: its first pair
        st.session_state["pair_from"] = rs.name
        st.session_state.pop("pick_qid", None)
        st.session_state.pop("pick_did", None)
        set_pair(rs.queries[qids[0]], rs.docs[candidates(qids[0])[0]])
    c1, c2 = st.columns(2)
    qid = c1.selectbox(
        f"Query from {rs.name} ({len(qids)})",
        qids,
        key="pick_qid",
        on_change=picked_query,
        format_func=lambda q: f"{q}: {rs.queries[q][:90]}",
    )
    docs = candidates(qid)
    if st.session_state.get("pick_did") not in docs:
        st.session_state["pick_did"] = docs[0]
    ranks = dict(zip(rs.candidates["doc_id"], rs.candidates["rank"])) if len(docs) else {}
    c2.selectbox(
        f"Document (BM25 candidates of query {qid})",
        docs,
        key="pick_did",
        on_change=picked_doc,
        format_func=lambda d: (
            f"#{ranks.get(d, '?')} {d} · rel {relevance.get((qid, d), '–')} · {rs.docs[d][:70]}"
        ),
    )
