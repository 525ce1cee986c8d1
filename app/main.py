"""mice-toolkit explorer: ``streamlit run app/main.py``.

Four views over one sidebar (model, collection, results folder):

- **Pair** — one query and document: score, token attention per layer/head, Integrated Gradients;
- **Flow** — role→role attention flows per layer (and head) from ``python -m probe.run`` results;
- **Ablation** — remove interactions live on the pair; sweep/search results as a Δ heatmap;
- **MICE** — the comparison table and latency–effectiveness Pareto plot; MICE configuration download.

URL query parameters preset the sidebar: ``?view=flow&model=PATH&collection=dl19&results=results``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import data  # noqa: E402
from app.views import ablation, flow, mice, pair  # noqa: E402
from app.views.common import Context, guard  # noqa: E402

VIEWS = {"Pair": pair.render, "Flow": flow.render, "Ablation": ablation.render, "MICE": mice.render}
LOCAL = "local folder…"
TYPED = "BEIR folder…"
NONE = "(none: type pairs)"


def _param(name: str, default: str = "") -> str:
    value = st.query_params.get(name)
    return value if isinstance(value, str) and value else default


def _init(key: str, value) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def sidebar() -> tuple[str, Context]:
    sb = st.sidebar
    sb.title("mice-toolkit explorer")
    views = list(VIEWS)
    wanted = _param("view").lower()
    _init("view", next((v for v in views if v.lower() == wanted), views[0]))
    view = sb.radio("View", views, key="view")
    if st.query_params.get("view") != view.lower():
        st.query_params["view"] = view.lower()

    sb.subheader("Model")
    model_param = _param("model")
    named = list(data.NAMED_MODELS)
    _init("model_choice", model_param if model_param in named else (LOCAL if model_param else "default"))
    _init("model_path", model_param if model_param not in named else "")
    choice = sb.selectbox(
        "Cross-encoder",
        ["default", *named, LOCAL],
        key="model_choice",
        format_func=lambda c: "default ($MICE_MODEL or reference)" if c == "default" else c,
    )
    model = ""
    if choice == LOCAL:
        model = sb.text_input("Local model folder", key="model_path", placeholder="runs/smoke-model").strip()
        if not model:
            sb.caption("Type the path of a cross-encoder folder.")
    elif choice != "default":
        model = choice
    with guard("Model"):
        sb.caption(f"→ `{data.resolve(model)}`")

    sb.subheader("Pairs from")
    coll_param = _param("collection", "dl19")
    colls = [NONE, *data.NAMED_COLLECTIONS, TYPED]
    _init(
        "collection_choice", coll_param if coll_param in colls else (NONE if coll_param == "none" else TYPED)
    )
    _init("collection_path", coll_param if coll_param not in colls and coll_param != "none" else "")
    cchoice = sb.selectbox("Collection", colls, key="collection_choice")
    collection = ""
    if cchoice == TYPED:
        collection = sb.text_input(
            "BEIR folder", key="collection_path", placeholder="corpus.jsonl, queries.jsonl, qrels/test.tsv"
        ).strip()
    elif cchoice != NONE:
        collection = cchoice

    sb.subheader("Results")
    _init("results", _param("results", "results"))
    results = (
        sb.text_input(
            "Results folder",
            key="results",
            help="root folder of the toolkit's result tables "
            "(parquet + JSON manifests); every subfolder is searched",
        ).strip()
        or "results"
    )
    root = Path(results).expanduser()
    if not root.is_dir():
        sb.warning(f"`{results}` is not a folder (yet); views that read results will say what to run.")
    return view, Context(model=model, collection=collection, results=root)


def main() -> None:
    start = time.perf_counter()
    st.set_page_config(page_title="mice-toolkit explorer", page_icon="🔎", layout="wide")
    view, ctx = sidebar()
    with guard(f"{view} view"):
        VIEWS[view](ctx)
    # the script run's own time (what a widget change costs on the server; the browser test reads it)
    seconds = time.perf_counter() - start
    st.session_state["_runs"] = st.session_state.get("_runs", 0) + 1
    st.sidebar.caption(
        f"this rerun: {seconds:.2f} s (run {st.session_state['_runs']})",
        help="server time of the last script run; the browser test reads it",
    )


main()
