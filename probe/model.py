"""Load a BERT-family cross-encoder, tokenize pairs with token roles, score and rank.

The public surface follows sentence-transformers' ``CrossEncoder``: :meth:`CrossEncoder.score` on a
list of ``(query, document)`` pairs and :meth:`CrossEncoder.rank` for one query. Every scorer of the
toolkit (cross-encoder, masked, MICE, MaxSim, LITE, bi-encoder) shares that surface (:class:`Scorer`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from .errors import BadInput
from .families import pair_template
from .options import DEFAULT_MAX_LENGTH
from .progress import bar as progress_bar
from .roles import token_roles

Pair = tuple[str, str]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' info logs and progress bars (CLI output stays one screen, errors one line)."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class PairBatch:
    """A padded batch of pairs plus the role of every token and each row's index in the caller's list."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    roles: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    index: list[int] = field(default_factory=list)
    position_ids: torch.Tensor | None = None  # None: 0, 1, 2, ... (a MICE model's canonical positions differ)

    def to(self, device: torch.device | str) -> PairBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PairBatch(
            move(self.input_ids),
            move(self.attention_mask),
            move(self.roles),
            move(self.token_type_ids),
            self.index,
            move(self.position_ids),
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Scorer:
    """Shared scoring surface. Subclasses implement :meth:`score`; higher scores mean more relevant."""

    name: str = "scorer"

    def score(self, pairs: Sequence[Pair], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def rank(self, query: str, docs: Sequence[str], *, top_k: int | None = None, batch_size: int = 32):
        """``[(doc_index, score), ...]`` best first."""
        scores = self.score([(query, d) for d in docs], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")[: top_k or len(docs)]
        return [(int(i), float(scores[i])) for i in order]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class CrossEncoder(Scorer):
    """A sequence-classification cross-encoder scoring ``[CLS] query [SEP] document [SEP]``.

    Scores are the raw relevance logit (for two-label models: logit(1) - logit(0)), i.e. what
    sentence-transformers' ``CrossEncoder.predict`` returns with an identity activation.
    """

    #: whether the ablation runner may cache per-layer prefix states of this model's plain forward
    #: (:mod:`ablations.masking.prefix`); a MICE model seen as a cross-encoder runs its own forward and may
    #: not
    prefix_cacheable: bool = True
    #: what besides the weights and ``max_length`` determines the scores (hashed into model fingerprints)
    signature: str = ""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        name: str = "cross-encoder",
        max_query_length: int | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.template = pair_template(tokenizer)  # how the tokenizer wraps a pair (its own special tokens)
        self.set_max_length(max_length)
        self.set_max_query_length(max_query_length)
        self._truncated: set[str] = set()  # long queries already reported
        self.num_labels = int(model.config.num_labels)
        if self.num_labels not in (1, 2):
            raise BadInput(
                f"model {name!r} has {self.num_labels} labels; a relevance cross-encoder has 1 or 2"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        new_head: bool = False,
        attn_implementation: str | None = None,
    ) -> CrossEncoder:
        """Load a local folder (a transformers or sentence-transformers CrossEncoder folder) or a hub id.

        ``new_head=True`` accepts an encoder without a trained classification head and adds a fresh
        one-logit head (the trainer's starting point); otherwise such a model is refused.
        ``max_length=None`` takes the folder's ``sentence_bert_config.json`` ``max_seq_length`` (the length a
        model was trained at), else 256; an explicit value always wins.
        """
        name = str(name_or_path)
        local = Path(name).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise BadInput(f"model folder {name!r} has no config.json; expected a transformers model folder")
        if not local.exists() and not _HUB_ID.fullmatch(name):
            raise BadInput(f"model path {name!r} does not exist (and is not a Hugging Face id like org/name)")
        source = str(local) if local.exists() else name
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if new_head:
            kwargs["num_labels"] = 1
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(source)
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    source, output_loading_info=True, **kwargs
                )
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInput(
                f"cannot load model {name!r}: expected a local cross-encoder folder or a Hugging Face id "
                f"(hub offline: {os.environ.get('HF_HUB_OFFLINE', '0') == '1'}) ({first})"
            ) from None
        missing_head = [k for k in info.get("missing_keys", []) if not k.startswith("bert.pooler")]
        if missing_head and not new_head:
            archs = ",".join(model.config.architectures or ["?"])
            raise BadInput(
                f"model {name!r} has no trained sequence-classification head (architectures: {archs}; "
                f"missing {missing_head[0]}); train one with `python -m ablations.train` "
                "or pass a cross-encoder"
            )
        st_conf = _read_json(local / "sentence_bert_config.json") if local.exists() else {}
        if max_length is None:
            max_length = int(st_conf.get("max_seq_length", DEFAULT_MAX_LENGTH))
        model.to(torch.device(device) if device else default_device())
        return cls(model, tokenizer, max_length=max_length, name=name)

    def save(self, path: str | os.PathLike) -> None:
        """Save as a folder loadable by this class, transformers and sentence-transformers' CrossEncoder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length}) + "\n"
        )
        # transformers writes the weights through a private temporary file (mode 0600): give every file
        # the mode the umask gives new files, so a shared model folder is readable by colleagues
        mask = os.umask(0)
        os.umask(mask)
        for f in path.iterdir():
            if f.is_file():
                f.chmod(0o666 & ~mask)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    def set_max_length(self, max_length: int) -> None:
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        if not 8 <= max_length <= limit:
            raise BadInput(f"max_length {max_length} is out of range; allowed 8..{limit} for this model")
        self.max_length = int(max_length)

    def set_max_query_length(self, max_query_length: int | None) -> None:
        """Queries longer than this many tokens are truncated (``None``: half of ``max_length``)."""
        if max_query_length is not None and max_query_length < 1:
            raise BadInput(f"max_query_length {max_query_length} must be >= 1")
        self.max_query_length = max_query_length

    @property
    def query_budget(self) -> int:
        """The most query tokens a pair can hold: the special tokens and one document token take the rest."""
        return self.max_length - (self.template.middle + 2) - 1

    @property
    def query_limit(self) -> int:
        """Query tokens kept: ``max_query_length``, else half of ``max_length``, never past the budget."""
        if self.max_query_length is None:
            return min(self.query_budget, self.max_length // 2)
        if self.max_query_length > self.query_budget:
            raise BadInput(
                f"max_query_length {self.max_query_length} leaves no room for the document: at most "
                f"{self.query_budget} query tokens fit max_length {self.max_length}"
            )
        return self.max_query_length

    def _truncate_query(self, query: str, n: int, limit: int) -> str:
        """``query`` cut at the end of its ``limit``-th token (text-level, so re-tokenizing gives at most
        ``limit`` tokens); reported once per query on stderr."""
        offsets = self.tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        cut = query[: offsets[limit - 1][1]]
        if query not in self._truncated:
            self._truncated.add(query)
            print(
                f"note: query {query[:50]!r}... has {n} tokens; kept the first {limit} (--max-query-length)",
                file=sys.stderr,
            )
        return cut

    # ------------------------------------------------------------ tokenizing
    def _tokenize(self, pairs: Sequence[Pair]) -> dict[str, list[list[int]]]:
        """Tokenize without padding; the query is kept up to :attr:`query_limit` tokens, the document
        truncated to fill ``max_length``."""
        if len(pairs) == 0:
            return {"input_ids": [], "attention_mask": []}
        queries = [q for q, _ in pairs]
        docs = [d for _, d in pairs]
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise BadInput(f"pair {i}: the query is empty; a query needs at least one token")
        limit = self.query_limit
        q_lens = self.tokenizer(queries, add_special_tokens=False, return_length=True)["length"]
        long = {q: n for q, n in zip(queries, q_lens) if n > limit}
        if long:
            cut = {q: self._truncate_query(q, n, limit) for q, n in long.items()}
            queries = [cut.get(q, q) for q in queries]
        for i, d in enumerate(docs):
            if not isinstance(d, str) or not d.strip():
                raise BadInput(f"pair {i}: the document is empty; a document needs at least one token")
        return self.tokenizer(queries, docs, truncation="only_second", max_length=self.max_length)

    def _collate(self, enc: dict[str, list], rows: Sequence[int]) -> PairBatch:
        feats = {
            k: [enc[k][i] for i in rows]
            for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in enc
        }
        padded = self.tokenizer.pad(feats, return_tensors="pt")
        roles = token_roles(
            padded["input_ids"], padded["attention_mask"], self.template.sep_id, self.template.middle
        )
        return PairBatch(
            padded["input_ids"], padded["attention_mask"], roles, padded.get("token_type_ids"), list(rows)
        )

    def encode(self, pairs: Sequence[Pair]) -> PairBatch:
        """One padded batch of ``pairs`` in the given order, with token roles."""
        enc = self._tokenize(pairs)
        return self._collate(enc, range(len(pairs)))

    def batches(self, pairs: Sequence[Pair], batch_size: int = 32) -> Iterator[PairBatch]:
        """Batches sorted by length (longest first) so little padding is computed; ``index`` maps back."""
        if batch_size < 1:
            raise BadInput(f"batch_size {batch_size} must be >= 1")
        enc = self._tokenize(pairs)
        lengths = np.array([len(ids) for ids in enc["input_ids"]])
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            yield self._collate(enc, order[start : start + batch_size].tolist())

    # --------------------------------------------------------------- scoring
    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """Relevance scores (with autograd if enabled by the caller) for one batch on the model's device."""
        out = self.model(**batch.to(self.device).model_inputs())
        return self.logits_to_scores(out.logits)

    def cls_states(self, batch: PairBatch) -> torch.Tensor:
        """The last layer's ``[CLS]`` states ``(n, H)`` of one batch: what the pooler and classifier read."""
        base = getattr(self.model, self.model.base_model_prefix)
        return base(**batch.to(self.device).model_inputs()).last_hidden_state[:, 0]

    def score(self, pairs: Sequence[Pair], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.score_batches(self.batches(pairs, batch_size), len(pairs), progress=progress)

    def score_batches(self, batches, n: int, *, progress: bool = False) -> np.ndarray:
        """Scores for ``batches`` (of :meth:`batches`, possibly pre-tokenized) covering ``n`` pairs."""
        scores = np.zeros(n, dtype=np.float32)
        with torch.inference_mode():
            bar = progress_bar(
                total=n, disable=not progress, desc=f"scoring {Path(self.name).name}", unit="pair"
            )
            for batch in batches:
                scores[batch.index] = self.forward(batch).float().cpu().numpy()
                bar.update(len(batch))
            bar.close()
        return scores


def model_fingerprint(ce: CrossEncoder) -> str:
    """sha1 over the model's config, weights and :attr:`~probe.model.CrossEncoder.signature` (16 hex digits):
    equal weights and signature give equal fingerprints."""
    h = hashlib.sha1(json.dumps(ce.model.config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(ce.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(f"max_length={ce.max_length}".encode())
    if ce.max_query_length is not None:  # an explicit query cut changes the scores of long queries
        h.update(f"max_query_length={ce.max_query_length}".encode())
    if ce.signature:  # e.g. a MICE model's configuration (same weights, different function)
        h.update(ce.signature.encode())
    return h.hexdigest()[:16]
