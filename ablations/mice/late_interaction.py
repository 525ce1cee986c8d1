"""Late-interaction baselines on the cross-encoder's backbone: ColBERT-style MaxSim and LITE.

Both encode the query (``[CLS] q [SEP]``, at most ``max_query_length`` word pieces) and the document
(``[CLS] d [SEP]``, at most ``max_doc_length``) *separately* with the same BERT encoder, project every
token state to ``dim`` (128) dimensions and L2-normalise it; documents can therefore be encoded once and
stored (:class:`~ablations.mice.doc_cache.DocStateIndex`, ``dim × 4`` bytes per token in float32).

- ``maxsim`` (ColBERT, Khattab & Zaharia 2020): ``score = Σ_i max_j cos(q_i, d_j)`` over the real query
  tokens. No query augmentation or punctuation filtering (kept minimal, documented in docs/mice.md).
- ``lite`` (Ji et al. 2024, "Efficient Document Ranking with Learnable Late Interactions"): the query ×
  document cosine matrix ``S`` (padded to ``Lq × Ld`` with zeros) goes through a small *separable* MLP:
  one shared MLP over each row (``Ld → row_hidden``), then one over each column of the result
  (``Lq → col_hidden``), flattened, then a linear layer to the score.

  Scaling (setting ``norm``, default ``"affine"``): the real entries of ``S`` go through one learnable
  scale and shift, ``a·S + b`` (padding stays 0), initialised to standardise the cosines of a fresh
  projection (mean 0.13, standard deviation 0.24 over real token pairs of DL 2020 on the reference model:
  ``a = 4``, ``b = -0.5``), and the final linear layer is initialised 10× PyTorch's default. Why: without
  them the untrained head scores every document of a query almost alike (score spread within a group 0.003
  against teacher margins of standard deviation ~1.5, and a 300-step run barely moved: DL19 nDCG@10 0.25);
  with them the spread starts at ~0.1 and the head learns. An earlier fix, ``norm="layer"`` (a LayerNorm
  over each row of ``S`` before the row MLP, over the ``row_hidden`` features after it, and over the
  flattened features before the final layer), made the head fit its training batches but not generalise
  (validation nDCG@10 0.36 → 0.29 over 300 steps; DL19 0.2643): a row ``a·e_j`` (one document token
  matching with strength ``a``) normalises to the same vector for every ``a > 0``, so the head could not
  see *how strongly* a query token matches, only where. The affine scaling keeps that; under the same
  recipe and data its validation nDCG@10 went 0.337 → 0.401 → 0.495 → 0.481 at steps 0/100/200/300
  (MaxSim: 0.358 → 0.460 → 0.488 → 0.471), DL19 nDCG@10 0.5402 (docs/mice.md).
  ``"layer"`` and ``"none"`` (the original head) stay available: folders saved before the setting existed
  load as ``"none"``, those saved with ``"layer"`` as ``"layer"``. As in the paper the row MLP weights each
  document *position* separately.

The encoder is initialised from a cross-encoder's BERT weights (the backbone the MICE model starts from),
the projection and LITE head from a seed; :mod:`ablations.retrain` trains them with the same loop, data
and losses as the MICE model. Same ``score`` / ``rank`` surface as every scorer of the toolkit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel

from ablations.mice.doc_cache import DocStateIndex, document_chunks, tokenizer_hash
from ablations.paths import resolve_model
from ablations.results import shareable
from probe.errors import BadInput
from probe.model import CrossEncoder, Pair, Scorer, quiet_transformers
from probe.progress import bar as progress_bar

KINDS = ("maxsim", "lite")
NORMS = ("affine", "layer", "none")  # LITE head scaling / normalisation (see the module docstring)
SIM_SCALE, SIM_SHIFT = (
    4.0,
    -0.5,
)  # "affine": a·S + b standardises a fresh projection's cosines (mean 0.13, sd 0.24)
OUT_GAIN = 10.0  # "affine": the final layer starts 10x PyTorch's default, so scores spread from the start
CONFIG_FILE = "late_interaction.json"


class LateInteractionModule(nn.Module):
    def __init__(
        self,
        encoder: BertModel,
        kind: str,
        *,
        dim: int = 128,
        max_query_length: int = 32,
        max_doc_length: int = 180,
        row_hidden: int = 32,
        col_hidden: int = 16,
        norm: str = "affine",
    ):
        super().__init__()
        if kind not in KINDS:
            raise BadInput(f"late-interaction kind {kind!r}; expected one of {', '.join(KINDS)}")
        if norm not in NORMS:
            raise BadInput(f"LITE norm {norm!r}; expected one of {', '.join(NORMS)}")
        self.kind, self.dim, self.norm = kind, dim, norm
        self.lq, self.ld = max_query_length + 2, max_doc_length + 2
        self.encoder = encoder
        self.proj = nn.Linear(encoder.config.hidden_size, dim)
        if kind == "lite":
            self.rows = nn.Sequential(nn.Linear(self.ld, row_hidden), nn.GELU())
            self.cols = nn.Sequential(nn.Linear(self.lq, col_hidden), nn.GELU())
            self.out = nn.Linear(row_hidden * col_hidden, 1)
            layer = norm == "layer"
            self.norm_in = nn.LayerNorm(self.ld) if layer else nn.Identity()
            self.norm_rows = nn.LayerNorm(row_hidden) if layer else nn.Identity()
            self.norm_out = nn.LayerNorm(row_hidden * col_hidden) if layer else nn.Identity()
            if norm == "affine":
                self.sim_scale = nn.Parameter(torch.tensor(SIM_SCALE))
                self.sim_shift = nn.Parameter(torch.tensor(SIM_SHIFT))
                with torch.no_grad():
                    self.out.weight.mul_(OUT_GAIN)

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return F.normalize(self.proj(h), dim=-1) * mask[..., None]

    def interact(self, q: torch.Tensor, qm: torch.Tensor, d: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
        """Scores of aligned pairs: ``q (n, Lq, dim)`` with ``d (n, Ld, dim)`` (padding rows are zero)."""
        sim = torch.einsum("nqe,nde->nqd", q, d)  # (n, Lq, Ld); padded tokens give 0
        if self.kind == "maxsim":
            sim = sim.masked_fill(dm[:, None, :] == 0, float("-inf"))
            return (sim.max(-1).values * qm).sum(-1)
        if self.norm == "affine":  # real entries only: padding stays 0
            sim = (sim * self.sim_scale + self.sim_shift) * (qm[:, :, None] * dm[:, None, :])
        s = F.pad(sim, (0, self.ld - sim.shape[2], 0, self.lq - sim.shape[1]))
        r = self.norm_rows(self.rows(self.norm_in(s)))  # (n, Lq, row_hidden)
        c = self.cols(r.transpose(1, 2))  # (n, row_hidden, col_hidden)
        return self.out(self.norm_out(c.flatten(1)))[:, 0]


class LateInteractionScorer(Scorer):
    """A :class:`LateInteractionModule` with its tokenizer: ``score`` / ``rank``, training, a document
    index."""

    def __init__(
        self,
        module: LateInteractionModule,
        tokenizer,
        *,
        name: str | None = None,
        init: str = "",
        encoder_layers: int | None = None,
    ):
        self.module, self.tokenizer = module, tokenizer
        self.init = init
        # the first N layers of the backbone named by ``init`` (None: all of them)
        self.encoder_layers = encoder_layers
        self.index: DocStateIndex | None = None
        self.name = name or f"{module.kind}:{Path(init).name}"

    # ------------------------------------------------------------------------------ building / saving
    @classmethod
    def from_cross_encoder(
        cls,
        source: str | CrossEncoder,
        kind: str,
        *,
        seed: int = 0,
        encoder_layers: int | None = None,
        **kw,
    ) -> LateInteractionScorer:
        """A fresh baseline whose encoder is the cross-encoder's BERT (weights copied). ``encoder_layers=N``
        keeps only its first N layers (token states read after layer N; default: every layer)."""
        ce = (
            source
            if isinstance(source, CrossEncoder)
            else CrossEncoder.from_pretrained(resolve_model(source), new_head=True)
        )
        base = getattr(ce.model, ce.model.base_model_prefix)
        config = ce.model.config.to_dict()
        depth = config["num_hidden_layers"]
        if encoder_layers is not None:
            if isinstance(encoder_layers, bool) or not isinstance(encoder_layers, int):
                raise BadInput(f"encoder layers {encoder_layers!r}: expected a whole number 1-{depth}")
            if not 1 <= encoder_layers <= depth:
                raise BadInput(
                    f"encoder layers {encoder_layers}: {ce.name!r} has {depth} layers; expected 1-{depth}"
                )
            config["num_hidden_layers"] = encoder_layers
        encoder = BertModel(BertConfig.from_dict(config), add_pooling_layer=False)
        missing, unexpected = encoder.load_state_dict(base.state_dict(), strict=False)
        if missing:
            raise BadInput(f"cannot build a {kind} encoder from {ce.name!r}: missing weights {missing[:3]}")
        torch.manual_seed(seed)
        module = LateInteractionModule(encoder, kind, **kw).to(ce.device)
        kept = None if encoder_layers in (None, depth) else encoder_layers
        return cls(module, ce.tokenizer, init=ce.name, encoder_layers=kept)

    def settings(self) -> dict:
        m = self.module
        out = {
            "kind": m.kind,
            "dim": m.dim,
            "max_query_length": m.lq - 2,
            "max_doc_length": m.ld - 2,
            "row_hidden": m.rows[0].out_features if m.kind == "lite" else 32,
            "col_hidden": m.cols[0].out_features if m.kind == "lite" else 16,
            "init": self.init,
        }
        if m.kind == "lite" and m.norm != "none":  # only then: older settings and fingerprints stay unchanged
            out["norm"] = m.norm
        if self.encoder_layers is not None:  # likewise: a full-depth encoder's settings stay as they were
            out["encoder_layers"] = self.encoder_layers
        return out

    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.module.encoder.save_pretrained(path / "encoder")
        self.tokenizer.save_pretrained(path / "encoder")
        head = {
            k: v.detach().cpu().contiguous()
            for k, v in self.module.state_dict().items()
            if not k.startswith("encoder.")
        }
        save_file(head, str(path / "head.safetensors"))
        (path / CONFIG_FILE).write_text(json.dumps({"schema_version": 1, **self.settings()}, indent=2) + "\n")
        shareable(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> LateInteractionScorer:
        from safetensors.torch import load_file

        path = Path(path)
        try:
            settings = json.loads((path / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            raise BadInput(
                f"{str(path)!r} is not a late-interaction model folder (no readable {CONFIG_FILE})"
            ) from None
        if settings.pop("schema_version", None) != 1:
            raise BadInput(f"{str(path / CONFIG_FILE)!r}: unsupported schema_version; this toolkit reads 1")
        init = settings.pop("init", "")
        kind = settings.pop("kind")
        encoder_layers = settings.pop("encoder_layers", None)  # the saved encoder already has that depth
        settings.setdefault("norm", "none")  # folders written before the setting existed: the original head
        with quiet_transformers():
            encoder = BertModel.from_pretrained(path / "encoder", add_pooling_layer=False)
            tokenizer = AutoTokenizer.from_pretrained(path / "encoder")
        module = LateInteractionModule(encoder, kind, **settings)
        module.load_state_dict(
            {
                **{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                **load_file(str(path / "head.safetensors")),
            }
        )
        module.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(module, tokenizer, name=f"{kind}:{path}", init=init, encoder_layers=encoder_layers)

    # ------------------------------------------------------------------------------ facts
    @property
    def model(self) -> nn.Module:
        return self.module

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def fingerprint(self) -> str:
        h = hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode())
        for k, v in sorted(self.module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def expected_fingerprint(self) -> dict:
        return {
            "model": self.fingerprint(),
            "config": self.module.kind,
            "tokenizer": tokenizer_hash(self.tokenizer),
            "layers": ["token-embeddings", self.module.dim],
            "dtype": "float32",
        }

    # ------------------------------------------------------------------------------ encoding
    def _tok(self, texts: Sequence[str], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise BadInput(f"text {i} is empty; queries and documents need at least one token")
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=width, padding=True, return_tensors="pt"
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def encode_queries(self, texts: Sequence[str]):
        ids, mask = self._tok(texts, self.module.lq)
        return self.module.embed(ids, mask), mask

    def encode_docs(self, texts: Sequence[str], max_doc_length: int | None = None):
        width = self.module.ld if max_doc_length is None else min(self.module.ld, max_doc_length + 2)
        ids, mask = self._tok(texts, width)
        return self.module.embed(ids, mask), mask

    def train_scores(self, pairs: Sequence[Pair], max_doc_length: int | None = None) -> torch.Tensor:
        """Scores of ``pairs`` in order, with autograd (each distinct query encoded once; documents cut to
        ``max_doc_length`` word pieces if given)."""
        queries = list(dict.fromkeys(q for q, _ in pairs))
        where = torch.tensor([queries.index(q) for q, _ in pairs], device=self.device)
        q, qm = self.encode_queries(queries)
        d, dm = self.encode_docs([d for _, d in pairs], max_doc_length)
        return self.module.interact(q[where], qm[where], d, dm)

    # ------------------------------------------------------------------------------ index
    def _doc_pieces(
        self, texts: list[str], batch_size: int = 16, progress: bool = False
    ) -> list[torch.Tensor]:
        """Each text's token embeddings ``(tokens_i, dim)`` in order, computed in length-sorted batches."""
        pieces: list[torch.Tensor | None] = [None] * len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        was = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                for s in progress_bar(
                    range(0, len(order), batch_size), disable=not progress, desc="document embeddings"
                ):
                    rows = order[s : s + batch_size].tolist()
                    emb, mask = self.encode_docs([texts[i] for i in rows])
                    for j, i in enumerate(rows):
                        pieces[i] = emb[j, : int(mask[j].sum())].cpu().clone()
        finally:
            self.module.train(was)
        return pieces

    def build_index(
        self, docs: Iterable[str], path: str | os.PathLike, *, batch_size: int = 16, progress: bool = False
    ) -> DocStateIndex:
        texts = list(dict.fromkeys(docs))
        if not texts:
            raise BadInput("no documents to index")
        pieces = self._doc_pieces(texts, batch_size, progress)
        self.index = DocStateIndex.write(path, texts, pieces, self.expected_fingerprint())
        return self.index

    def attach_index(self, path: str | os.PathLike, *, verify: bool = True) -> DocStateIndex:
        self.index = DocStateIndex.open(path, self.expected_fingerprint(), verify=verify)
        return self.index

    def detach_index(self) -> None:
        self.index = None

    @property
    def bytes_per_token(self) -> int:
        return self.module.dim * 4

    # ------------------------------------------------------------------------------ scoring
    def score(self, pairs: Sequence[Pair], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Scores of ``pairs``. Without an attached index each distinct document is encoded once for the
        whole call (in memory-bounded chunks, :data:`~ablations.mice.doc_cache.DOC_STATE_BUDGET`)."""
        if self.index is None and len(pairs):
            return self._score_documents_once(pairs, batch_size, progress)
        scores = np.zeros(len(pairs), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            by_query.setdefault(q, []).append(i)
        was = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                bar = progress_bar(
                    total=len(pairs), disable=not progress, desc=f"scoring {self.name[-40:]}", unit="pair"
                )
                for query, rows in by_query.items():
                    q, qm = self.encode_queries([query])
                    for s in range(0, len(rows), batch_size):
                        chunk = rows[s : s + batch_size]
                        texts = [pairs[i][1] for i in chunk]
                        if self.index is not None:
                            st = self.index.gather(texts, self.device)
                            d, dm = st.kv, st.mask
                        else:
                            d, dm = self.encode_docs(texts)
                        n = len(chunk)
                        out = self.module.interact(q.expand(n, -1, -1), qm.expand(n, -1), d, dm)
                        scores[chunk] = out.float().cpu().numpy()
                        bar.update(n)
                bar.close()
        finally:
            self.module.train(was)
        return scores

    def _score_documents_once(self, pairs: Sequence[Pair], batch_size: int, progress: bool) -> np.ndarray:
        scores = np.zeros(len(pairs), dtype=np.float32)
        ld = self.module.ld

        def counts(texts: list[str]) -> list[int]:
            ids = self.tokenizer(list(texts), truncation=True, max_length=ld)["input_ids"]
            return [len(i) for i in ids]

        bar = progress_bar(
            total=len(pairs), disable=not progress, desc=f"scoring {self.name[-40:]}", unit="pair"
        )
        try:
            for texts, rows in document_chunks(pairs, counts, self.bytes_per_token):
                self.index = DocStateIndex.in_memory(texts, self._doc_pieces(texts), {})
                scores[rows] = self.score([pairs[i] for i in rows], batch_size=batch_size)
                self.index = None
                bar.update(len(rows))
        finally:
            self.index = None
            bar.close()
        return scores
