"""What the explorer reads and runs: result tables, models, collections and one-pair computations, cached.

Everything here calls the toolkit's own functions (``ablations.results.read_table``, ``probe.capture``,
``probe.attributions``, ``ablations.masking.masks`` / ``ablations.masking.masked``, ``probe.flows``); the
views only draw. Models and collections are cached with ``st.cache_resource`` (one copy per process), tables
and pair results with ``st.cache_data`` (keyed by the file's path and modification time, so a rerun of a CLI
shows up on the next interaction). The hub is switched off (``HF_HUB_OFFLINE=1`` unless set otherwise): a
model name that is not on disk fails at once with a message instead of starting a download.
"""

from __future__ import annotations

import contextlib
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from ablations.data.collections import ALIASES, COLLECTIONS, RerankSet, load_collection  # noqa: E402
from ablations.masking.masked import MaskedCrossEncoder, with_mask  # noqa: E402
from ablations.masking.masks import MaskSpec, spec_from_document  # noqa: E402
from ablations.mice.config import is_mice_config  # noqa: E402
from ablations.mice.view import MiceCrossEncoder  # noqa: E402

# NAMED_MODELS: the names the sidebar offers besides a local folder; REPO_ROOT: for the views
from ablations.paths import NAMED_MODELS, REPO_ROOT, resolve_model  # noqa: E402, F401
from ablations.results import read_manifest, read_table  # noqa: E402
from ablations.scorers import load_cross_encoder  # noqa: E402
from probe.errors import BadInput  # noqa: E402
from probe.model import CrossEncoder, quiet_transformers  # noqa: E402
from probe.ranges import format_ranges  # noqa: E402

#: Collection names the sidebar offers besides a BEIR folder.
NAMED_COLLECTIONS: tuple[str, ...] = tuple(COLLECTIONS)

#: Table names by what the app does with them.
PROBE_TABLES = ("flows_per_query", "flows")
ABLATION_KINDS = ("ablation-sweep", "ablation-search", "ablation-run")
COMPARISON_TABLE = "comparison"


def message(exc: BaseException) -> str:
    """A one-line readable message for an exception (a :class:`BadInput` is already one)."""
    if isinstance(exc, BadInput):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TableInfo:
    """One results table found on disk: its folder, name, the manifest's ``kind`` and creation time."""

    folder: Path
    table: str
    kind: str
    created: str = ""
    error: str = ""


@dataclass
class ResultFolder:
    """A folder of results tables (``<table>.parquet`` + ``<table>.json``)."""

    path: Path
    tables: dict[str, TableInfo] = field(default_factory=dict)

    @property
    def kinds(self) -> set[str]:
        return {t.kind for t in self.tables.values()}

    def label(self, root: Path) -> str:
        try:
            rel = self.path.relative_to(root)
        except ValueError:
            rel = self.path
        return str(rel) if str(rel) != "." else f"{root.name}/"


def _signature(root: Path) -> tuple:
    """Paths and modification times of the manifests under ``root`` (cheap; invalidates the scan cache)."""
    if not root.is_dir():
        return ()
    out = []
    for p in root.rglob("*.json"):
        try:
            out.append((str(p), p.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(out))


@st.cache_data(show_spinner=False, max_entries=16)
def _scan(root: str, signature: tuple) -> dict[str, dict[str, TableInfo]]:
    found: dict[str, dict[str, TableInfo]] = {}
    for manifest_path, _ in signature:
        path = Path(manifest_path)
        if not path.with_suffix(".parquet").is_file():
            continue  # search.json, sweep.json, MICE configurations: not tables
        folder, table = path.parent, path.stem
        try:
            meta = json.loads(path.read_text())
            info = TableInfo(folder, table, str(meta.get("kind", "")), str(meta.get("created", "")))
        except (OSError, ValueError) as exc:
            info = TableInfo(folder, table, "", "", f"manifest {str(path)!r} is not JSON: {exc}")
        found.setdefault(str(folder), {})[table] = info
    return found


def scan_results(root: str | Path) -> list[ResultFolder]:
    """Every folder under ``root`` holding results tables, sorted by path."""
    root = Path(root).expanduser()
    found = _scan(str(root), _signature(root))
    return [ResultFolder(Path(f), tables) for f, tables in sorted(found.items())]


def probe_folders(folders: list[ResultFolder]) -> list[ResultFolder]:
    return [f for f in folders if any(t in f.tables for t in PROBE_TABLES)]


def ablation_folders(folders: list[ResultFolder]) -> list[ResultFolder]:
    """Folders of ablation results, the most informative first: searches (their minimal set), then sweeps
    (a grid), then folders of single runs (a table); the scan's order within each."""
    found = [
        f
        for f in folders
        if "summary" in f.tables
        and (f.kinds & set(ABLATION_KINDS) or "steps" in f.tables or "per_query" in f.tables)
    ]

    def rank(f: ResultFolder) -> int:
        if "ablation-search" in f.kinds or "steps" in f.tables:
            return 0
        return 1 if "ablation-sweep" in f.kinds else 2

    return sorted(found, key=rank)


def comparison_folders(folders: list[ResultFolder]) -> list[ResultFolder]:
    return [
        f
        for f in folders
        if COMPARISON_TABLE in f.tables or any(k.startswith(("mice-compar", "compare")) for k in f.kinds)
    ]


@st.cache_data(show_spinner=False, max_entries=64)
def _read(folder: str, table: str, mtime_ns: int) -> pd.DataFrame:
    return read_table(Path(folder), table)


def table(folder: str | Path, name: str) -> pd.DataFrame:
    """``<folder>/<name>.parquet`` through :func:`ablations.results.read_table` (cached until the file
    changes)."""
    path = Path(folder) / f"{name}.parquet"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0  # read_table raises the readable error
    return _read(str(folder), name, mtime)


def manifest(folder: str | Path, name: str) -> dict:
    return read_manifest(Path(folder), name)


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BadInput(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BadInput(f"{str(path)!r} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{str(path)!r} holds a JSON {type(data).__name__}; expected an object")
    return data


# ------------------------------------------------------------------------------ models, collections
def resolve(name: str | None) -> str:
    """``ablations.paths.resolve_model`` (``None``/empty → ``$MICE_MODEL`` or ``reference``)."""
    return resolve_model(name.strip() if isinstance(name, str) and name.strip() else None)


@st.cache_resource(show_spinner=False, max_entries=3)
def _load_model(path: str, max_length: int | None) -> CrossEncoder:
    with quiet_transformers():
        return load_cross_encoder(path, max_length=max_length, what="max length")


def load_model(name: str | None, max_length: int | None = None) -> tuple[CrossEncoder, str]:
    """The cross-encoder named ``name`` (a name of ``resolve_model`` or a local folder) and its path.

    ``max_length=None``: the model folder's own (``CrossEncoder.from_pretrained``'s default). A MICE model
    (``mice.json`` or a retrained MICE folder) loads as ``ablations.mice.view.MiceCrossEncoder``: every view
    shows its masked plan (kept layers only; removed interactions have zero attention)."""
    path = resolve(name)
    if Path(path).expanduser().exists():
        path = str(Path(path).expanduser().resolve())
    return _load_model(path, None if max_length is None else int(max_length)), path


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_collection(name: str) -> RerankSet:
    return load_collection(name)


def collection(name: str) -> RerankSet:
    """``ablations.data.collections.load_collection`` (cached per process)."""
    name = name.strip()
    if not name:
        raise BadInput(f"no collection given; choose one of {', '.join(NAMED_COLLECTIONS)} or a BEIR folder")
    key = ALIASES.get(name, name)
    if key not in COLLECTIONS:
        key = str(Path(key).expanduser().resolve())
    return _load_collection(key)


# -------------------------------------------------------------------------------------- MICE specs
@dataclass(frozen=True)
class Variant:
    """What the Pair view runs instead of the plain model: a mask, or a MICE configuration.

    ``spec_json`` is the mask applied to the model's attention (for the score of a plain mask, and for
    attention and attributions); ``mice_json`` a MICE configuration scored by ``ablations.mice.plan``;
    ``model`` the model the configuration names (its ``weights`` or ``base_model``), if any.
    """

    label: str
    spec_json: str | None = None
    mice_json: str | None = None
    model: str | None = None
    notes: tuple[str, ...] = ()


def variant_from_file(path: str | Path) -> Variant:
    """A :class:`Variant` from a JSON file: a MICE configuration, a mask spec or a search result."""
    doc = read_json(path)
    where = repr(str(path))
    if is_mice_config(doc):
        from ablations.mice.config import MiceConfig, spec_from_interactions

        cfg = MiceConfig.from_dict(doc, where=f"MICE config {where}")
        spec = spec_from_interactions(cfg.interactions())  # the effective per-layer table (mask + merge)
        notes = []
        if cfg.drop_layer < cfg.num_layers:
            dropped = format_ranges(range(cfg.drop_layer, cfg.num_layers))
            notes.append(
                f"dropped layers {dropped}: MICE does not run them (their attention is shown for "
                "the masked full model)"
            )
        if cfg.doc_positions == "canonical":
            notes.append(
                "attention and attributions use the cross-encoder's joint tokenization; the MICE score "
                f"uses canonical document positions (offset {cfg.doc_position_offset})"
            )
        return Variant(
            f"MICE {cfg.label}",
            spec.to_json(),
            cfg.to_json(indent=None),
            cfg.weights_source(Path(path).parent),
            tuple(notes),
        )
    spec = spec_from_document(doc, where)
    return Variant(spec.label, spec.to_json())


#: Folders never searched for JSON files (environments, caches, version control).
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "site-packages", ".pytest_cache"}
MAX_JSON_BYTES = 4_000_000


def _json_files(root: Path) -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        out.extend(Path(folder) / f for f in sorted(files) if f.endswith(".json"))
    return out


@st.cache_data(show_spinner=False, ttl=20, max_entries=16)
def _spec_files(roots: tuple[str, ...], mice_only: bool) -> list[Path]:
    out = []
    for root in roots:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            continue
        for path in _json_files(root_path):
            if path.with_suffix(".parquet").is_file() or path.name == "sweep.json":
                continue  # a results manifest or a sweep's progress file
            try:
                if path.stat().st_size > MAX_JSON_BYTES:
                    continue
                doc = json.loads(path.read_text())
                if not (isinstance(doc, dict) and is_mice_config(doc)):
                    if mice_only:
                        continue
                    spec_from_document(doc)
            except (OSError, ValueError, AttributeError, BadInput):
                continue
            out.append(path.resolve())
    return list(dict.fromkeys(out))


def spec_files(*roots: str | Path, mice_only: bool = False) -> list[Path]:
    """JSON files under ``roots`` (each searched recursively, environments and hidden folders skipped)
    that hold a MICE configuration or, unless ``mice_only``, a mask spec (search results, --spec files).
    Re-scanned at most every 20 s."""
    return [p for p in _spec_files(tuple(str(r) for r in roots), mice_only) if p.is_file()]


def working_folders(results: str | Path) -> tuple[Path, ...]:
    """Where the views look for configuration files: the results folder, then the working folder (so
    ``runs/mice/mice.json``, where the docs' export command writes, is offered too)."""
    return tuple(dict.fromkeys([Path(results).expanduser().resolve(), Path.cwd().resolve()]))


# ------------------------------------------------------------------------------------ one pair
def _masked(ce: CrossEncoder, spec_json: str | None) -> CrossEncoder | MaskedCrossEncoder:
    """The model under the spec's mask (``ablations.masking.masked.with_mask``; no spec: the model itself)."""
    return with_mask(ce, MaskSpec.from_json(spec_json)) if spec_json else ce


def model_label(ce: CrossEncoder) -> str:
    """How the views name the loaded model's own score: "full model", or "MICE model" for a MICE folder."""
    return "MICE model" if isinstance(ce, MiceCrossEncoder) else "full model"


@st.cache_data(show_spinner=False, max_entries=256)
def pair_score(_ce: CrossEncoder, model_key: str, spec_json: str | None, query: str, doc: str) -> float:
    """The score of one pair by the model, or by ``ablations.masking.masked.MaskedCrossEncoder`` under the
    spec."""
    return float(_masked(_ce, spec_json).score([(query, doc)], batch_size=1)[0])


@st.cache_data(show_spinner=False, max_entries=256)
def mice_score(_ce: CrossEncoder, model_key: str, mice_json: str, query: str, doc: str) -> float:
    """The score of one pair by a MICE configuration on the model's weights
    (``ablations.mice.model.MiceModel``)."""
    from ablations.mice.config import MiceConfig
    from ablations.mice.model import MiceModel

    ce = _ce.mice.ce if isinstance(_ce, MiceCrossEncoder) else _ce  # a configuration applies to plain weights
    return float(MiceModel(ce, MiceConfig.from_json(mice_json)).score([(query, doc)], batch_size=1)[0])


def _unmasked(scorer: CrossEncoder | MaskedCrossEncoder) -> CrossEncoder:
    return scorer.ce if isinstance(scorer, MaskedCrossEncoder) else scorer


@dataclass
class PairAttention:
    tokens: list[str]
    roles: list[str]
    pattern: np.ndarray  # (heads, n, n), post-softmax, the pair's real tokens
    score: float


@dataclass
class PairPatterns:
    tokens: list[str]
    roles: list[str]
    patterns: np.ndarray  # (layers, heads, n, n) float32, post-softmax, the pair's real tokens
    score: float
    seconds: float  # the forward + capture that made them


@st.cache_data(show_spinner=False, max_entries=6)
def pair_patterns(
    _ce: CrossEncoder, model_key: str, spec_json: str | None, query: str, doc: str
) -> PairPatterns:
    """Every layer's and head's attention pattern for one pair in one forward (``probe.capture``), under
    the spec's mask; cached per (model, mask, pair), so a layer or head change only re-slices.

    A 12-layer × 12-head × 256-token pair is 38 MB of float32; 6 pairs are kept at most."""
    import time

    from probe.capture import capture, pattern_name
    from probe.roles import ROLE_NAMES

    start = time.perf_counter()
    scorer = _masked(_ce, spec_json)
    ce = _unmasked(scorer)
    batch = ce.encode([(query, doc)])
    with capture(ce, ("pattern",)) as cap:
        if scorer is not ce:  # the mask's bias on the same interception point the hooks use
            cap.context.bias = scorer.bias(batch)
        scores = cap.forward(batch)
    cache = cap.cache
    roles = [ROLE_NAMES[int(r)] for r in cache.roles[0]]
    n = len(roles)
    patterns = np.stack(
        [cache[pattern_name(layer)][0].numpy()[:, :n, :n] for layer in range(ce.num_layers)]
    ).astype(np.float32)
    tokens = ce.tokenizer.convert_ids_to_tokens(batch.input_ids[0, :n].tolist())
    return PairPatterns(tokens, roles, patterns, float(scores[0]), time.perf_counter() - start)


@st.cache_data(show_spinner=False, max_entries=64)
def pair_attributions(
    _ce: CrossEncoder, model_key: str, spec_json: str | None, query: str, doc: str, n_steps: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """captum Integrated Gradients per token and per role (``probe.attributions``), under the spec's mask."""
    from probe.attributions import integrated_gradients, role_summary

    scorer = _masked(_ce, spec_json)
    ce = _unmasked(scorer)
    applied = scorer.applied(ce.encode([(query, doc)])) if scorer is not ce else contextlib.nullcontext()
    with applied:
        tokens, info = integrated_gradients(ce, [(query, doc)], n_steps=n_steps, batch_size=1)
    return tokens, role_summary(tokens, info)
