"""MICE configurations as data: which interactions survive in which layer, where interaction starts and ends.

A :class:`MiceConfig` names a base cross-encoder and a mask (a :class:`~ablations.masking.masks.MaskSpec`),
plus

- ``merge_layer`` — layers ``[0, merge_layer)`` see no query-side ↔ document-side interaction (the
  query side is ``cls, query, sep1``, the document side ``doc, sep2``): every such pair is removed there
  on top of the mask. ``None``: derived from the mask (the first layer where one survives);
- ``drop_layer`` — layers ``drop_layer …`` are not run (layer dropping): the score is read from the CLS
  state after layer ``drop_layer - 1`` through the model's pooler and classifier. ``None``: no dropping;
- the tokenization and position convention (``doc_positions``): ``"joint"`` = exactly the cross-encoder's
  (the document's position ids start after the query, truncation to ``max_length``); ``"canonical"`` =
  query and document tokenized separately (``max_query_length`` / ``max_doc_length`` tokens) and the
  document's position ids start at the fixed ``doc_position_offset`` whatever the query's length, so its
  states can be precomputed once (see docs/mice.md);
- the execution plan chosen (``plan``: ``masked`` | ``split`` | ``doc-cache``), checked against the mask
  by :mod:`ablations.mice.plan`.

JSON (``schema_version`` 1, written by :meth:`MiceConfig.to_json`, read by :meth:`MiceConfig.from_json`)
also carries the resolved per-layer interaction table (``interactions``: for each layer the removed
``<source>2<target>`` role pairs, or ``"dropped"``), so a reader sees what every layer computes. On
reading, the table must equal the one the mask compiles to; a file that has only ``interactions`` (a
hand-written per-layer table, no ``mask``) is accepted and turned into a mask with one rule per layer.

Named presets (:func:`preset`): the MICE paper's cumulative steps ``mice-step0`` … ``mice-step3@K`` (mask
only) and the final architecture ``mice-lK+N`` = ``mice-step3@K`` with ``merge_layer = K`` and
``drop_layer = K + N`` (``mice-l4+3`` is the paper's MICE-ℓ4+3 on 12-layer MiniLM; ``mice-l2+3`` its
analogue on a 6-layer model); ``mice-final`` is that architecture at the model's own depth
(:func:`~ablations.masking.interactions.default_final_preset`: ``mice-l4+3`` on 12 layers, ``mice-l2+3``
on 6), as ``mice-step3`` alone means ``mice-step3@K`` with ``K = layers // 3``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ablations.masking.interactions import default_final_preset
from ablations.masking.masks import MaskSpec, Rule, compile_mask
from probe.errors import BadInput
from probe.roles import ROLE_NAMES, TOKEN_ROLES, Role

SCHEMA_VERSION = 1
KIND = "mice-config"
PLAN_SHAPES = ("masked", "split", "doc-cache")
POSITIONS = ("joint", "canonical")
CACHE_DTYPES = ("float32", "float16")

#: Roles of the query side and of the document side of ``[CLS] query [SEP] document [SEP]``.
QUERY_SIDE = (int(Role.CLS), int(Role.QUERY), int(Role.SEP1))
DOC_SIDE = (int(Role.DOC), int(Role.SEP2))

#: Canonical position of the first document token: where it sits after a 7-token query (the median
#: word-piece length of MS MARCO dev / TREC DL queries), so the convention changes typical pairs least.
DEFAULT_DOC_OFFSET = 9
DEFAULT_MAX_QUERY_LENGTH = 64
#: Document budget of a 256-token cross-encoder after a typical 7-token query (256 - 7 - 3).
DEFAULT_MAX_DOC_LENGTH = 246


def doc_budget(max_length: int) -> int:
    """Canonical document budget matching a cross-encoder of ``max_length`` tokens: what a document gets
    after a typical query (``DEFAULT_DOC_OFFSET - 2`` word pieces) and the three special tokens."""
    return max(1, max_length - 3 - (DEFAULT_DOC_OFFSET - 2))


_FINAL = re.compile(r"mice-l(\d+)\+(\d+)")


def preset_names() -> str:
    return (
        "mice-step0, mice-step1, mice-step2, mice-step3[@K], mice-lK+N (step3@K, merge K, drop K+N), "
        "mice-final (mice-lK+3 with K = layers // 3: mice-l4+3 on 12 layers, mice-l2+3 on 6)"
    )


@dataclass
class MiceConfig:
    """A MICE model: a base cross-encoder under a mask, with merge and drop layers. JSON round-trips
    exactly."""

    base_model: str
    num_layers: int
    num_heads: int
    mask: MaskSpec = field(default_factory=MaskSpec)
    merge_layer: int | None = None
    drop_layer: int | None = None
    doc_positions: str = "canonical"
    doc_position_offset: int = DEFAULT_DOC_OFFSET
    max_length: int = 256  # joint positions: the cross-encoder's pair budget
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH  # canonical: query word pieces kept
    max_doc_length: int = DEFAULT_MAX_DOC_LENGTH  # canonical: document word pieces kept
    plan: str | None = None  # None: the cheapest exact plan (filled by ablations.mice.plan.choose_plan)
    cache_dtype: str = "float32"
    weights: str | None = None  # folder with retrained weights (None: the base model's)
    source: dict = field(default_factory=dict)  # provenance (search.json, preset name, ...)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.schema_version != SCHEMA_VERSION:
            raise BadInput(
                f"MICE config schema_version {self.schema_version!r} is not supported; this toolkit "
                f"reads schema_version {SCHEMA_VERSION} (re-export it with `python -m ablations.export`)"
            )
        if not isinstance(self.mask, MaskSpec):
            self.mask = MaskSpec.from_dict(self.mask)
        for name in (
            "num_layers",
            "num_heads",
            "doc_position_offset",
            "max_length",
            "max_query_length",
            "max_doc_length",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInput(f"MICE config {name} {value!r} must be a positive integer")
        if self.drop_layer is None:
            self.drop_layer = self.num_layers
        if not isinstance(self.drop_layer, int) or not 1 <= self.drop_layer <= self.num_layers:
            raise BadInput(
                f"MICE config drop_layer {self.drop_layer!r} must be in 1..{self.num_layers} "
                f"(the model has {self.num_layers} layers; layers >= drop_layer are not run)"
            )
        if self.merge_layer is not None and (
            not isinstance(self.merge_layer, int) or not 0 <= self.merge_layer <= self.drop_layer
        ):
            raise BadInput(
                f"MICE config merge_layer {self.merge_layer!r} must be in 0..drop_layer ({self.drop_layer})"
            )
        if self.doc_positions not in POSITIONS:
            raise BadInput(
                f"MICE config doc_positions {self.doc_positions!r}; expected one of {', '.join(POSITIONS)}"
            )
        if self.plan is not None and self.plan not in PLAN_SHAPES:
            raise BadInput(f"MICE config plan {self.plan!r}; expected one of {', '.join(PLAN_SHAPES)}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise BadInput(
                f"MICE config cache_dtype {self.cache_dtype!r}; expected one of {', '.join(CACHE_DTYPES)}"
            )
        compile_mask(self.mask, self.num_layers, self.num_heads)  # bad ranges surface now

    # ------------------------------------------------------------------------------ derived tables
    def allowed(self) -> torch.Tensor:
        """The effective table ``allowed[layer, head|1, source role, target role]`` over *all* layers:
        the mask plus the merge constraint (no query-side ↔ document-side pair before ``merge_layer``)."""
        table = compile_mask(self.mask, self.num_layers, self.num_heads).allowed.clone()
        if self.merge_layer:
            for s in QUERY_SIDE:
                for t in DOC_SIDE:
                    table[: self.merge_layer, :, s, t] = False
                    table[: self.merge_layer, :, t, s] = False
        return table

    def kept_allowed(self) -> torch.Tensor:
        """The effective table of the layers that run (``[0, drop_layer)``)."""
        return self.allowed()[: self.drop_layer]

    def score_reads_document(self) -> bool:
        """Whether the score (read from CLS after layer ``drop_layer - 1``) can depend on the document at all:
        document information must reach CLS through the allowed attention of the kept layers (any head).
        Information moves one hop per layer, so e.g. ``mice-lK+1`` cannot: in layer K the query first reads
        the document, and no later layer lets CLS read the query."""
        real = list(TOKEN_ROLES)  # padding is masked out by the attention mask whatever the table says
        table = self.kept_allowed().any(dim=1)[:, real][
            :, :, real
        ]  # (layer, source, target): source reads target
        n = len(real)
        reach = torch.eye(n, dtype=torch.bool)  # reach[r, r']: role r's states carry role r''s information
        for tab in table:
            reach = reach | (tab.to(torch.int64) @ reach.to(torch.int64) > 0)
        return bool(reach[int(Role.CLS), list(DOC_SIDE)].any())

    def interactions(self) -> list[dict]:
        """Per layer: the removed role pairs (``"<source>2<target>"``, per head when heads differ)."""
        table = self.allowed()
        out = []
        for layer in range(self.num_layers):
            if layer >= self.drop_layer:
                out.append({"layer": layer, "dropped": True})
                continue
            tab = table[layer]
            if tab.shape[0] == 1 or bool((tab == tab[:1]).all()):
                out.append({"layer": layer, "removed": _removed_names(tab[0])})
            else:
                out.append({"layer": layer, "removed_by_head": [_removed_names(t) for t in tab]})
        return out

    @property
    def label(self) -> str:
        name = self.source.get("preset") or self.mask.label
        return (
            f"{name} (merge {self.merge_layer if self.merge_layer is not None else 'auto'}, "
            f"drop {self.drop_layer}/{self.num_layers}, {self.doc_positions} positions)"
        )

    # ------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        out = {"schema_version": self.schema_version, "kind": KIND}
        for f in fields(self):
            if f.name == "schema_version":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, MaskSpec) else value
        out["interactions"] = self.interactions()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is None) + ("\n" if indent else "")

    def save(self, path: str | Path) -> Path:
        from ablations.results import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "MICE config") -> MiceConfig:
        if not isinstance(data, dict):
            raise BadInput(f"{where} must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BadInput(
                f"{where} has schema_version {version!r}; this toolkit reads MICE config schema_version "
                f"{SCHEMA_VERSION} (re-export it with `python -m ablations.export`)"
            )
        if data.get("kind", KIND) != KIND:
            raise BadInput(f"{where} has kind {data.get('kind')!r}, expected {KIND!r}")
        known = {f.name for f in fields(cls)} | {"kind", "interactions"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
        for required in ("base_model", "num_layers", "num_heads"):
            if required not in data:
                raise BadInput(f"{where}: missing field {required!r}")
        kwargs = {k: v for k, v in data.items() if k not in ("kind", "interactions")}
        table = data.get("interactions")
        if "mask" not in data:
            if table is None:
                raise BadInput(f"{where}: give a 'mask' (a mask spec) or a per-layer 'interactions' table")
            kwargs["mask"] = spec_from_interactions(table, where)
            drops = [row.get("layer") for row in table if isinstance(row, dict) and row.get("dropped")]
            if drops and "drop_layer" not in data:
                kwargs["drop_layer"] = min(drops)
        cfg = cls(**kwargs)
        if table is not None:
            if not isinstance(table, list) or len(table) != cfg.num_layers:
                n = len(table) if isinstance(table, list) else "?"
                raise BadInput(f"{where}: 'interactions' has {n} layers but num_layers is {cfg.num_layers}")
            if _normalise(table) != _normalise(cfg.interactions()):
                bad = next(
                    i
                    for i, (a, b) in enumerate(zip(_normalise(table), _normalise(cfg.interactions())))
                    if a != b
                )
                raise BadInput(
                    f"{where}: the 'interactions' table of layer {bad} disagrees with the mask, "
                    f"merge_layer and drop_layer; fix one of them (or drop 'interactions' to derive it)"
                )
        return cfg

    @classmethod
    def from_json(cls, text: str, *, where: str = "MICE config") -> MiceConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{where} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where=where)

    @classmethod
    def load(cls, path: str | Path) -> MiceConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "mice.json"
        try:
            text = path.read_text()
        except OSError:
            raise BadInput(f"MICE config {str(path)!r} does not exist or is unreadable") from None
        return cls.from_json(text, where=f"MICE config {str(path)!r}")

    def weights_source(self, folder: str | Path | None) -> str:
        """The model the configuration runs on: its ``weights`` (relative to ``folder``, the configuration
        file's folder) if it has them, else its ``base_model``."""
        if self.weights is None:
            return self.base_model
        weights = Path(self.weights)
        return str(weights if weights.is_absolute() or folder is None else Path(folder) / weights)

    def fingerprint(self) -> str:
        """Hash of everything that determines the scores besides the weights (16 hex digits)."""
        keep = {
            k: v for k, v in self.to_dict().items() if k not in ("base_model", "weights", "source", "plan")
        }
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def __eq__(self, other) -> bool:
        return isinstance(other, MiceConfig) and self.to_dict() == other.to_dict()


def _removed_names(tab: torch.Tensor) -> list[str]:
    """Removed (source, target) pairs of real roles of a ``(6, 6)`` table, as sorted ``s2t`` names."""
    return [
        f"{ROLE_NAMES[s]}2{ROLE_NAMES[t]}" for s in TOKEN_ROLES for t in TOKEN_ROLES if not bool(tab[s, t])
    ]


def _normalise(table: list) -> list:
    out = []
    for row in table:
        if not isinstance(row, dict):
            return [None]
        if row.get("dropped"):
            out.append(("dropped",))
        elif "removed_by_head" in row:
            heads = [tuple(sorted(h)) for h in row["removed_by_head"]]
            out.append(("heads", *heads) if len(set(heads)) > 1 else ("all", heads[0]))
        else:
            out.append(("all", tuple(sorted(row.get("removed", [])))))
    return out


def spec_from_interactions(table, where: str = "MICE config") -> MaskSpec:
    """A mask spec with one rule per layer (and head) from a per-layer ``interactions`` table."""
    if not isinstance(table, list):
        raise BadInput(f"{where}: 'interactions' must be a list with one entry per layer")
    rules = []
    for i, row in enumerate(table):
        if not isinstance(row, dict) or row.get("layer", i) != i:
            raise BadInput(f"{where}: 'interactions' entry {i} must be an object with \"layer\": {i}")
        if row.get("dropped"):
            continue
        if "removed_by_head" in row:
            for h, names in enumerate(row["removed_by_head"]):
                if names:
                    rules.append(Rule("+".join(names), str(i), str(h)))
        elif row.get("removed"):
            rules.append(Rule("+".join(row["removed"]), str(i)))
    return MaskSpec(rules)


# -------------------------------------------------------------------------------------- presets
def preset(name: str, num_layers: int, num_heads: int, base_model: str, **overrides) -> MiceConfig:
    """A named configuration: ``mice-step0..3[@K]`` (mask only) or ``mice-lK+N`` (final architecture)."""
    key = name.strip().lower()
    if key == "mice-final":
        key = default_final_preset(num_layers)
    m = _FINAL.fullmatch(key)
    if m:
        k, n = int(m.group(1)), int(m.group(2))
        if k + n > num_layers or n < 1:
            raise BadInput(
                f"preset {name!r}: merge layer {k} + {n} interaction layers exceeds the model's "
                f"{num_layers} layers"
            )
        fields_ = {"mask": MaskSpec([Rule(f"mice-step3@{k}")]), "merge_layer": k, "drop_layer": k + n}
    elif key.startswith("mice-step"):
        try:
            fields_ = {"mask": MaskSpec([Rule(key)])}
        except BadInput:
            raise BadInput(f"unknown MICE preset {name!r}; expected one of {preset_names()}") from None
    else:
        raise BadInput(f"unknown MICE preset {name!r}; expected one of {preset_names()}")
    fields_.update(overrides)
    if "max_length" in fields_ and "max_doc_length" not in fields_:
        fields_["max_doc_length"] = doc_budget(fields_["max_length"])
    source = {"preset": key, **fields_.pop("source", {})}
    return MiceConfig(
        base_model=base_model, num_layers=num_layers, num_heads=num_heads, source=source, **fields_
    )


def is_mice_config(data: dict) -> bool:
    """Whether a JSON document is a MICE configuration (else a mask spec or a search result)."""
    return data.get("kind") == "mice-config" or {"base_model", "num_layers", "num_heads"} <= set(data)
