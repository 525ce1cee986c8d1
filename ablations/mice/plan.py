"""Execution plans: the cheapest exact way to compute a MICE configuration's scores, and their executor.

:func:`compile_plan` reads the effective per-layer table of a :class:`~ablations.mice.config.MiceConfig`
(layers ``[0, drop_layer)``) and derives

- ``merge`` — the first layer where a query-side token (``cls, query, sep1``) and a document-side token
  (``doc, sep2``) interact (in either direction, in any head); ``drop`` if they never do;
- ``doc_independent`` — no document-side token attends to a query-side token in any kept layer.

Three plan shapes, all computing the same function (tested at 1e-4, see ``tests/test_mice_plan.py``):

``masked``     the masked full forward: ``[CLS] q [SEP] d [SEP]`` as one sequence, the table as an additive
               bias in every layer (:func:`ablations.masking.masks.expand_table`, the function the masked
               cross-encoder uses) — the reference, and the fallback that always applies.
``split``      layers ``[0, merge)`` run the query side ``[CLS] q [SEP]`` (once per distinct query of the
               batch) and the document side ``d [SEP]`` as two shorter sequences, with the positions and
               token types they have in the pair (cost ~ q² + d² instead of (q + d)²); layers
               ``[merge, drop)`` run the joined sequence under the mask.
``doc-cache``  when ``doc_independent`` and positions are canonical, the document side's keys and values
               of layers ``[merge, drop)`` depend on the document alone: computed once per document
               (:mod:`ablations.mice.doc_cache` stores them), so at query time only query-side rows are
               computed — once per query below ``merge``, then per candidate against the cached keys and
               values.

Layers from ``drop`` on are never run; the score is the classifier on the pooled CLS state after layer
``drop - 1``, and the last kept layer is computed for the CLS row only (nothing else is read).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ablations.masking.masks import expand_table
from ablations.mice.config import DOC_SIDE, PLAN_SHAPES, QUERY_SIDE, MiceConfig
from probe.errors import BadInput
from probe.layers import bert_base, classifier_logits, is_bert_layer, layer_rows, padding_bias
from probe.model import CrossEncoder, Pair
from probe.roles import N_ROLES, Role

PAD = int(Role.PAD)
REAL = [int(r) for r in (Role.CLS, Role.QUERY, Role.SEP1, Role.DOC, Role.SEP2)]


# ------------------------------------------------------------------------------------------ compiler
@dataclass
class Plan:
    shape: str
    merge: int
    drop: int
    doc_independent: bool
    positions: str
    valid: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def cached_layers(self) -> tuple[int, ...]:
        """Layers whose document keys/values a ``doc-cache`` plan stores per document."""
        return tuple(range(self.merge, self.drop))

    def describe(self) -> str:
        parts = {
            "masked": f"masked full forward, layers 0-{self.drop - 1}",
            "split": f"query and document apart in layers 0-{self.merge - 1}, joined in "
            f"{self.merge}-{self.drop - 1}"
            if self.merge < self.drop
            else f"query and document apart in layers 0-{self.drop - 1}",
            "doc-cache": f"document states precomputed (keys/values of layers {self.merge}-{self.drop - 1}); "
            f"query side alone in 0-{self.merge - 1}, against cached documents from "
            f"{self.merge}",
        }
        return f"{self.shape}: {parts[self.shape]}"

    def to_dict(self) -> dict:
        return {
            "shape": self.shape,
            "merge_layer": self.merge,
            "drop_layer": self.drop,
            "doc_independent": self.doc_independent,
            "valid": list(self.valid),
            "notes": self.notes,
            "description": self.describe(),
        }


def analyse(cfg: MiceConfig) -> tuple[int, bool]:
    """``(merge, doc_independent)`` of the kept layers of ``cfg``."""
    table = cfg.kept_allowed()  # (drop, h|1, 6, 6)
    q, d = list(QUERY_SIDE), list(DOC_SIDE)
    cross = table[:, :, q][:, :, :, d].flatten(1).any(1) | table[:, :, d][:, :, :, q].flatten(1).any(1)
    merge = int(cross.nonzero()[0, 0]) if bool(cross.any()) else cfg.drop_layer
    doc_reads_query = bool(table[:, :, d][:, :, :, q].any())
    return merge, not doc_reads_query


def compile_plan(cfg: MiceConfig, shape: str | None = None) -> Plan:
    """The plan of ``cfg``: ``shape`` if given (and valid), else ``cfg.plan`` if set, else the cheapest."""
    merge, independent = analyse(cfg)
    valid = ["masked"]
    notes = []
    if merge > 0:
        valid.append("split")
    if independent and cfg.doc_positions == "canonical":
        valid.append("doc-cache")
    elif independent:
        notes.append(
            "document states are query-independent but positions are joint (they depend on the query "
            "length): use doc_positions 'canonical' to cache them"
        )
    if merge >= cfg.drop_layer:
        notes.append(
            "no query-document interaction in any kept layer: every document of a query gets the same score"
        )
    want = shape or cfg.plan
    if want is None:
        want = valid[-1]
    if want not in PLAN_SHAPES:
        raise BadInput(f"plan {want!r}; expected one of {', '.join(PLAN_SHAPES)}")
    if want not in valid:
        why = {
            "split": f"query and document interact already in layer {merge}",
            "doc-cache": "documents attend to query-side tokens in some kept layer"
            if not independent
            else "positions are joint (document positions depend on the query length)",
        }[want]
        raise BadInput(
            f"plan {want!r} does not compute this configuration exactly: {why}; valid plans: "
            f"{', '.join(valid)}"
        )
    return Plan(want, merge, cfg.drop_layer, independent, cfg.doc_positions, tuple(valid), notes)


# ------------------------------------------------------------------------------------------ batches
@dataclass
class MiceBatch:
    """Pairs tokenized apart: distinct queries ``[CLS] q [SEP]`` and per-pair documents ``d [SEP]``."""

    q_ids: torch.Tensor  # (nq, Lq)
    q_mask: torch.Tensor
    q_roles: torch.Tensor
    pair_query: torch.Tensor  # (n,) index into the queries
    d_ids: torch.Tensor | None  # (n, Ld); None when documents come from a document-state index
    d_mask: torch.Tensor | None
    d_roles: torch.Tensor | None
    d_pos: torch.Tensor | None
    doc_texts: list[str] = field(default_factory=list)
    index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.pair_query.shape[0])

    def to(self, device) -> MiceBatch:
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return MiceBatch(
            mv(self.q_ids),
            mv(self.q_mask),
            mv(self.q_roles),
            mv(self.pair_query),
            mv(self.d_ids),
            mv(self.d_mask),
            mv(self.d_roles),
            mv(self.d_pos),
            self.doc_texts,
            self.index,
        )


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


def doc_key(text: str) -> bytes:
    """16-byte key of a document text in a document-state index."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


# ------------------------------------------------------------------------------------------ bias
def table_bias(
    table: torch.Tensor, row_roles: torch.Tensor, col_roles: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive bias ``(b, h|1, m, k)`` for rows ``row_roles (b, m)`` attending to ``col_roles (b, k)``.

    The rows must be the first ``m`` columns (a row's own column has its index). Padding columns are
    removed here (no separate padding mask needed); a role that the table leaves without any real key
    keeps its own column — the fallback of :func:`ablations.masking.masks.expand_table` for pairs, where all
    five roles are present.
    """
    t = table.to(row_roles.device).clone()
    h = t.shape[0]
    empty = ~t[:, :, REAL].any(-1)  # (h, 6)
    empty[:, PAD] = False
    t[:, :, PAD] = False
    t[:, PAD, :] = False
    t[:, PAD, REAL] = True
    code = row_roles[:, :, None] * N_ROLES + col_roles[:, None, :]  # (b, m, k)
    allowed = t.reshape(h, -1)[:, code].transpose(0, 1)  # (b, h, m, k)
    if bool(empty.any()):
        m, k = row_roles.shape[1], col_roles.shape[1]
        eye = torch.arange(m, device=code.device)[:, None] == torch.arange(k, device=code.device)[None, :]
        e = empty[:, row_roles].transpose(0, 1)  # (b, h, m)
        allowed = allowed | (e[..., None] & eye)
    return torch.zeros(allowed.shape, dtype=dtype, device=code.device).masked_fill_(~allowed, float("-inf"))


class _Biases:
    """Per batch: one bias per distinct layer table (layers sharing a table share the tensor)."""

    def __init__(self, table: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype):
        self.table, self.rows, self.cols, self.dtype = table, rows, cols, dtype
        self.cache: dict[bytes, torch.Tensor] = {}

    def __call__(self, layer: int) -> torch.Tensor:
        tab = self.table[layer]
        key = tab.numpy().tobytes()
        if key not in self.cache:
            self.cache[key] = table_bias(tab, self.rows, self.cols, self.dtype)
        return self.cache[key]


# ------------------------------------------------------------------------------------------ layers
def _check_bert(ce: CrossEncoder) -> None:
    base = bert_base(ce.model)
    if base is None or not all(is_bert_layer(layer) for layer in base.encoder.layer):
        family = str(getattr(ce.model.config, "model_type", "?")).replace("_", "-")
        raise BadInput(
            f"model {ce.name!r} ({type(ce.model).__name__}, family {family!r}) is not a BERT sequence "
            "classifier with embeddings / encoder.layer / pooler / classifier; MICE plans need one "
            "(masking, sweeps and search work for every supported family: see the README's support table)"
        )


@dataclass
class DocStates:
    """Document-side keys and values of the cached layers: ``kv (n, Ld, layers, 2, H)``, mask, roles."""

    kv: torch.Tensor
    mask: torch.Tensor
    roles: torch.Tensor

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kv[:, :, i, 0], self.kv[:, :, i, 1]


# ------------------------------------------------------------------------------------------ executor
class PlanExecutor:
    """Computes scores of ``cfg`` on ``ce``'s weights with any valid plan shape (autograd-friendly)."""

    def __init__(self, ce: CrossEncoder, cfg: MiceConfig, plan: Plan | None = None):
        _check_bert(ce)
        if (cfg.num_layers, cfg.num_heads) != (ce.num_layers, ce.num_heads):
            raise BadInput(
                f"MICE config is for {cfg.num_layers} layers × {cfg.num_heads} heads but model "
                f"{ce.name!r} has {ce.num_layers} × {ce.num_heads}; export a config for this model"
            )
        limit = int(getattr(ce.model.config, "max_position_embeddings", 512))
        longest = (
            cfg.doc_position_offset + cfg.max_doc_length + 1
            if cfg.doc_positions == "canonical"
            else cfg.max_length
        )
        if longest > limit:
            raise BadInput(
                f"MICE config positions reach {longest} but model {ce.name!r} has {limit} position "
                "embeddings; lower max_doc_length / doc_position_offset / max_length"
            )
        self.ce, self.cfg = ce, cfg
        self.plan = plan or compile_plan(cfg)
        self.table = cfg.kept_allowed()
        self.base = bert_base(ce.model)
        self.layers = self.base.encoder.layer
        self.doc_type = 1 if int(getattr(ce.model.config, "type_vocab_size", 2)) > 1 else 0
        tok = ce.tokenizer
        self.cls_id, self.sep_id, self.pad_id = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id or 0

    @property
    def device(self) -> torch.device:
        return self.ce.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.ce.model.parameters()).dtype

    # --------------------------------------------------------------------------- tokenizing
    def tokenize_queries(self, queries: Sequence[str]) -> list[list[int]]:
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise BadInput(f"query {i}: the query is empty; a query needs at least one token")
        ids = self.ce.tokenizer(list(queries), add_special_tokens=False)["input_ids"]
        if self.cfg.doc_positions == "canonical":
            return [x[: self.cfg.max_query_length] for x in ids]
        budget = self.cfg.max_length - 4
        for q, x in zip(queries, ids):
            if len(x) > budget:
                raise BadInput(
                    f"query {q[:60]!r}... has {len(x)} tokens; at most {budget} fit max_length "
                    f"{self.cfg.max_length}"
                )
        return ids

    def tokenize_docs(self, docs: Sequence[str]) -> list[list[int]]:
        for i, d in enumerate(docs):
            if not isinstance(d, str) or not d.strip():
                raise BadInput(f"document {i}: the document is empty; a document needs at least one token")
        # Cut while tokenizing (no "longer than the model's maximum" warning on long abstracts): canonical
        # documents keep max_doc_length pieces; joint ones are cut later to the pair budget, below max_length.
        width = self.cfg.max_doc_length if self.cfg.doc_positions == "canonical" else self.cfg.max_length
        return (
            self.ce.tokenizer(list(docs), add_special_tokens=False, truncation=True, max_length=width)[
                "input_ids"
            ]
            if docs
            else []
        )

    def encode(
        self, pairs: Sequence[Pair], index: Sequence[int] | None = None, *, with_docs: bool = True
    ) -> MiceBatch:
        """Tokenize ``pairs``: each distinct query once, each pair's document (unless ``with_docs`` is
        off)."""
        queries = list(dict.fromkeys(q for q, _ in pairs))
        where = {q: i for i, q in enumerate(queries)}
        q_tok = self.tokenize_queries(queries)
        q_rows = [[self.cls_id, *x, self.sep_id] for x in q_tok]
        q_ids = _pad(q_rows, self.pad_id)
        q_mask = _pad([[1] * len(r) for r in q_rows], 0)
        q_roles = _pad([[int(Role.CLS)] + [int(Role.QUERY)] * len(x) + [int(Role.SEP1)] for x in q_tok], PAD)
        pair_query = torch.tensor([where[q] for q, _ in pairs], dtype=torch.long)
        docs = [d for _, d in pairs]
        d_ids = d_mask = d_roles = d_pos = None
        if with_docs:
            d_tok = self.tokenize_docs(docs)
            if self.cfg.doc_positions == "joint":
                d_tok = [
                    x[: self.cfg.max_length - 3 - len(q_tok[where[q]])] for x, (q, _) in zip(d_tok, pairs)
                ]
                offsets = [len(q_tok[where[q]]) + 2 for q, _ in pairs]
            else:
                offsets = [self.cfg.doc_position_offset] * len(pairs)
            d_rows = [[*x, self.sep_id] for x in d_tok]
            d_ids = _pad(d_rows, self.pad_id)
            d_mask = _pad([[1] * len(r) for r in d_rows], 0)
            d_roles = _pad([[int(Role.DOC)] * len(x) + [int(Role.SEP2)] for x in d_tok], PAD)
            d_pos = _pad([list(range(o, o + len(r))) for o, r in zip(offsets, d_rows)], 0)
        return MiceBatch(
            q_ids,
            q_mask,
            q_roles,
            pair_query,
            d_ids,
            d_mask,
            d_roles,
            d_pos,
            docs,
            list(index) if index is not None else list(range(len(pairs))),
        )

    # --------------------------------------------------------------------------- pieces
    def _embed_query(self, b: MiceBatch) -> torch.Tensor:
        pos = torch.arange(b.q_ids.shape[1], device=b.q_ids.device)[None].expand_as(b.q_ids)
        return self.base.embeddings(
            input_ids=b.q_ids, token_type_ids=torch.zeros_like(b.q_ids), position_ids=pos
        )

    def _embed_docs(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.base.embeddings(
            input_ids=ids, token_type_ids=torch.full_like(ids, self.doc_type), position_ids=pos
        )

    def head(self, states: torch.Tensor) -> torch.Tensor:
        """Scores from ``(n, H)`` CLS states (what ``forward(..., head=False)`` returns)."""
        return self._head(states[:, None])

    def _head(self, cls: torch.Tensor, head: bool = True) -> torch.Tensor:
        """Scores from the ``(n, 1, H)`` CLS states, or (``head=False``) the ``(n, H)`` states themselves."""
        if not head:
            return cls[:, 0]
        return self.ce.logits_to_scores(classifier_logits(self.ce.model, cls))

    def _run(self, h: torch.Tensor, roles: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Layers ``[start, stop)`` on a whole sequence (the model's own layer modules)."""
        biases = _Biases(self.table, roles, roles, h.dtype)
        for i in range(start, stop):
            h = self.layers[i](h, biases(i))
        return h

    def query_states(self, b: MiceBatch) -> torch.Tensor:
        """Query-side states entering layer ``merge`` (each distinct query once)."""
        return self._run(self._embed_query(b), b.q_roles, 0, self.plan.merge)

    def doc_states(
        self, ids: torch.Tensor, mask: torch.Tensor, roles: torch.Tensor, pos: torch.Tensor
    ) -> DocStates:
        """Document-side keys/values of layers ``[merge, drop)`` (document side alone, exact when
        documents never read the query side)."""
        h = self._embed_docs(ids, pos)
        biases = _Biases(self.table, roles, roles, h.dtype)
        kv = []
        for i in range(self.plan.drop):
            if i >= self.plan.merge:
                attn = self.layers[i].attention.self
                kv.append(torch.stack([attn.key(h), attn.value(h)], 2))  # (n, Ld, 2, H)
            if i < self.plan.drop - 1:
                h = self.layers[i](h, biases(i))
        stacked = torch.stack(kv, 2) if kv else h.new_zeros(h.shape[0], h.shape[1], 0, 2, h.shape[2])
        return DocStates(stacked, mask, roles)

    # --------------------------------------------------------------------------- plans
    def forward(
        self, b: MiceBatch, shape: str | None = None, docs: DocStates | None = None, *, head: bool = True
    ) -> torch.Tensor:
        """Scores of the batch (autograd-friendly) with the plan's shape, or ``shape`` if given; with
        ``head=False`` the CLS states that the head reads, ``(n, H)`` (feature distillation)."""
        shape = shape or self.plan.shape
        if shape not in self.plan.valid:
            raise BadInput(
                f"plan {shape!r} is not exact for this configuration; valid: {', '.join(self.plan.valid)}"
            )
        b = b.to(self.device)
        if shape == "masked":
            return self._masked(b, head)
        if shape == "split":
            return self._split(b, head)
        if docs is None:
            docs = self.doc_states(b.d_ids, b.d_mask, b.d_roles, b.d_pos)
        return self._doc_cache(b, docs, head)

    def _joint_inputs(self, b: MiceBatch):
        """The contiguous pair sequences ``[CLS] q [SEP] d [SEP] [PAD]*`` with their positions and roles."""
        n = len(b)
        q_len = b.q_mask.sum(1)[b.pair_query]
        d_len = b.d_mask.sum(1)
        width = int((q_len + d_len).max())
        ids = torch.full((n, width), self.pad_id, dtype=torch.long, device=b.q_ids.device)
        pos, types = torch.zeros_like(ids), torch.zeros_like(ids)
        roles = torch.full_like(ids, PAD)
        mask = torch.zeros_like(ids)
        for i in range(n):
            lq, ld, qi = int(q_len[i]), int(d_len[i]), int(b.pair_query[i])
            ids[i, :lq], ids[i, lq : lq + ld] = b.q_ids[qi, :lq], b.d_ids[i, :ld]
            pos[i, :lq], pos[i, lq : lq + ld] = torch.arange(lq), b.d_pos[i, :ld]
            types[i, lq : lq + ld] = self.doc_type
            roles[i, :lq], roles[i, lq : lq + ld] = b.q_roles[qi, :lq], b.d_roles[i, :ld]
            mask[i, : lq + ld] = 1
        return ids, pos, types, roles, mask

    def _masked(self, b: MiceBatch, head: bool = True) -> torch.Tensor:
        """The reference: the masked full forward over the kept layers."""
        ids, pos, types, roles, mask = self._joint_inputs(b)
        return self.joint_forward(ids, pos, types, roles, mask, head=head)

    def joint_forward(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        types: torch.Tensor,
        roles: torch.Tensor,
        mask: torch.Tensor,
        *,
        head: bool = True,
    ) -> torch.Tensor:
        """Scores (or, ``head=False``, CLS states) of joint pair sequences (the ``_joint_inputs``
        layout): the kept layers, each with the table's bias (``expand_table``, as the masked
        cross-encoder) plus the padding mask, then the head on CLS.

        The layers are the model's own modules, so :func:`probe.attention.attention_context` hooks and biases
        apply inside (this is how the probe and the ablation runner see a MICE model)."""
        h = self.base.embeddings(input_ids=ids, token_type_ids=types, position_ids=pos)
        pad = padding_bias(mask, h.dtype)
        cache: dict[bytes, torch.Tensor] = {}
        for i in range(self.plan.drop):
            tab = self.table[i]
            key = tab.numpy().tobytes()
            if key not in cache:
                cache[key] = pad if bool(tab.all()) else pad + expand_table(tab, roles, h.dtype)
            h = self.layers[i](h, cache[key])
        return self._head(h[:, :1], head)

    def _split(self, b: MiceBatch, head: bool = True) -> torch.Tensor:
        merge, drop = self.plan.merge, self.plan.drop
        hq = self.query_states(b)
        if merge >= drop:  # no interaction at all: the score reads the query side only
            return self._head(hq[b.pair_query, :1], head)
        hd = self._run(self._embed_docs(b.d_ids, b.d_pos), b.d_roles, 0, merge)
        h = torch.cat([hq[b.pair_query], hd], 1)
        roles = torch.cat([b.q_roles[b.pair_query], b.d_roles], 1)
        h = self._run(h, roles, merge, drop - 1)
        last = _Biases(self.table, roles[:, :1], roles, h.dtype)(drop - 1)
        return self._head(layer_rows(self.layers[drop - 1], h[:, :1], h, last), head)

    def _doc_cache(self, b: MiceBatch, docs: DocStates, head: bool = True) -> torch.Tensor:
        merge, drop = self.plan.merge, self.plan.drop
        hq = self.query_states(b)  # (nq, Lq, H), each distinct query once
        if merge >= drop:
            return self._head(hq[b.pair_query, :1], head)
        if docs.kv.shape[0] != len(b):
            raise ValueError(f"document states for {docs.kv.shape[0]} pairs, batch has {len(b)}")
        q_roles = b.q_roles[b.pair_query]
        cols = torch.cat([q_roles, docs.roles.to(q_roles.device)], 1)
        full = _Biases(self.table, q_roles, cols, hq.dtype)
        cls = _Biases(self.table, q_roles[:, :1], cols, hq.dtype)
        h, expand = hq, b.pair_query  # the first joint layer projects each distinct query once
        for j, i in enumerate(range(merge, drop)):
            extra = docs.layer(j)
            if i < drop - 1:
                h = layer_rows(self.layers[i], h, h, full(i), extra, expand)
            else:
                h = layer_rows(self.layers[i], h[:, :1], h, cls(i), extra, expand)
            expand = None
        return self._head(h[:, :1], head)
