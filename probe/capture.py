"""Capture attention of a cross-encoder, per layer and head, without changing its scores.

One call answers "who attends to whom, in which layer?"::

    with capture(scorer, what=("flows",), layers="0-5") as cap:
        scores = cap.score(pairs)                      # the model's own scores
    cap.cache["blocks.3.attn.hook_role_flow"]          # (pairs, heads, 5 source roles, 5 target roles)

Everything captured is keyed by a TransformerLens-style name:

=====================================  ==============================================================
``blocks.{l}.attn.hook_pattern``       the post-softmax pattern, one ``(heads, n, n)`` tensor per pair
                                       (trimmed to its ``n`` real tokens)
``blocks.{l}.attn.hook_role_flow``     role→role flows ``(pairs, heads, 5, 5)`` (:mod:`probe.flows`),
                                       reduced inside the hook; the pattern itself is dropped
``blocks.{l}.hook_cls_rollout``        attention rollout after layers ``0..l`` (all heads, every layer
                                       hooked): the share of the CLS row on each role ``(pairs, 5)``
                                       (:mod:`probe.rollout`)
=====================================  ==============================================================

Hooks go through the one interception point :func:`probe.attention.attention_context` and live only for
the span of the ``with`` block. Layers that are not captured keep the fused attention kernel; captured
layers run the same math in eager form (scores equal the model's eager attention exactly, and its fused
kernel up to float rounding, ~1e-6). Only what is asked is kept, so memory stays bounded on long runs
(flows: 25 floats per pair × head × layer).

``backend="transformer_lens"`` runs the encoder through TransformerLens itself instead (4.x
``TransformerBridge``; ``HookedEncoder`` was removed in 4.0 and the bridge's BERT adapter needs a
masked-LM head, see :func:`transformer_lens_bridge`) and reduces the patterns it caches with the same
hook functions, so both backends return the same cache. It materialises every intermediate activation
and is slower; the default ``"hf"`` backend is the one to use on long runs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .attention import AttentionContext, attention_context, hook_name, self_attention_modules
from .errors import BadInput
from .flows import role_flows, role_onehot, source_weights
from .model import CrossEncoder, Pair, PairBatch
from .options import BACKENDS  # noqa: F401 - the capture backends
from .progress import bar as progress_bar
from .ranges import parse_indices
from .roles import Role

HOOK_ROLE_FLOW = "blocks.{layer}.attn.hook_role_flow"
HOOK_CLS_ROLLOUT = "blocks.{layer}.hook_cls_rollout"
WHAT = ("pattern", "flows", "rollout")


def flow_name(layer: int) -> str:
    return HOOK_ROLE_FLOW.format(layer=layer)


def pattern_name(layer: int) -> str:
    return hook_name("pattern", layer)


def rollout_name(layer: int) -> str:
    return HOOK_CLS_ROLLOUT.format(layer=layer)


@dataclass
class CaptureSpec:
    """What to capture: plain data (JSON round-trip via :meth:`to_dict` / ``CaptureSpec(**d)``)."""

    what: tuple[str, ...] = ("flows",)
    layers: list[int] | None = None  # None: all layers
    heads: list[int] | None = None  # None: all heads
    backend: str = "hf"  # "hf": hooks on the Hugging Face model; "transformer_lens": a TransformerBridge

    def to_dict(self) -> dict:
        return asdict(self) | {"what": list(self.what)}


class ProbeCache(dict):
    """Captured tensors keyed by hook name, rows in the order of ``index`` (the caller's pair indices).

    ``roles[i]`` holds the role codes of pair ``index[i]``'s real tokens; ``heads`` the heads of the
    pattern/flow tensors; ``layers`` the captured layers.
    """

    def __init__(self, *args, index=(), roles=(), heads=(), layers=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.index = list(index)
        self.roles = list(roles)
        self.heads = list(heads)
        self.layers = list(layers)


@dataclass
class _BatchState:
    onehot: torch.Tensor
    weights: torch.Tensor
    real: torch.Tensor
    lengths: list[int]
    rollout: torch.Tensor | None = None
    fired: set = field(default_factory=set)
    out: dict = field(default_factory=dict)


class Capture:
    """Runs batches through a cross-encoder and keeps what a :class:`CaptureSpec` asks for.

    Use through :func:`capture` (which installs the hooks); :meth:`forward` on a batch, or :meth:`score`
    on pairs, return the model's scores and fill :attr:`cache`. With ``backend="transformer_lens"`` the
    batch runs through :func:`transformer_lens_bridge` instead and the same hook functions reduce the
    patterns TransformerLens cached, so both backends fill the same cache.
    """

    def __init__(self, scorer: CrossEncoder, spec: CaptureSpec):
        if not isinstance(scorer, CrossEncoder):
            raise BadInput(
                f"capture needs a CrossEncoder (a BERT-family model with attention), got "
                f"{type(scorer).__name__}"
            )
        unknown = [w for w in spec.what if w not in WHAT]
        if unknown or not spec.what:
            raise BadInput(
                f"cannot capture {unknown[0] if unknown else 'nothing'!r}; choose from {', '.join(WHAT)}"
            )
        if spec.backend not in BACKENDS:
            raise BadInput(
                f"capture backend {spec.backend!r} is unknown; expected one of {', '.join(BACKENDS)}"
            )
        self_attention_modules(scorer.model)  # raises BadInput for a model without a hookable attention stack
        self.scorer = scorer
        self.backend = spec.backend
        self._bridge = transformer_lens_bridge(scorer) if spec.backend == "transformer_lens" else None
        self.what = tuple(spec.what)
        self.layers = parse_indices(spec.layers, scorer.num_layers, "layer")
        self.heads = parse_indices(spec.heads, scorer.num_heads, "head")
        self.spec = CaptureSpec(self.what, self.layers, self.heads, self.backend)
        self._all_heads = self.heads == list(range(scorer.num_heads))
        hooked = set(self.layers) if {"pattern", "flows"} & set(self.what) else set()
        if "rollout" in self.what:
            hooked = set(range(scorer.num_layers))  # rollout multiplies every layer's (head-mean) pattern
        self.hooked_layers = sorted(hooked)
        self.context = AttentionContext()
        for layer in self.hooked_layers:
            self.context.add_hook(pattern_name(layer), self._make_hook(layer))
        self._state: _BatchState | None = None
        self._rows: dict[str, list] = {}
        self._index: list[int] = []
        self._roles: list[torch.Tensor] = []
        self._seen: set[int] = set()
        self._active = False

    # ----------------------------------------------------------------- hooks
    def _make_hook(self, layer: int):
        capture_layer = layer in self.layers
        want_flows = "flows" in self.what and capture_layer
        want_pattern = "pattern" in self.what and capture_layer
        want_rollout = "rollout" in self.what

        def hook(pattern: torch.Tensor, name: str) -> None:
            st = self._state
            if st is None:  # a forward outside Capture.forward (e.g. the caller's own model call)
                return
            st.fired.add(layer)
            p = pattern.detach()
            sel = p if self._all_heads else p[:, self.heads]
            if want_flows:
                st.out[flow_name(layer)] = role_flows(sel, st.onehot, st.weights).float().cpu()
            if want_pattern:
                full = sel.float().cpu()
                st.out[pattern_name(layer)] = [full[i, :, :n, :n].clone() for i, n in enumerate(st.lengths)]
            if want_rollout:
                st.rollout = _rollout_step(p, st.real, st.rollout)
                cls_row = st.rollout[:, 0, :].unsqueeze(1)  # (b, 1, n)
                st.out[rollout_name(layer)] = torch.matmul(cls_row, st.onehot).squeeze(1).float().cpu()

        return hook

    # ------------------------------------------------------------------- run
    def forward(self, batch: PairBatch) -> torch.Tensor:
        """Scores of one batch (on CPU); captured rows are stored under ``batch.index``."""
        if not self._active:
            raise RuntimeError("Capture.forward must run inside `with capture(...)`")
        dup = self._seen.intersection(batch.index)
        if dup:
            raise ValueError(
                f"pair index {min(dup)} was already captured; use one capture per pair list "
                "(or batches with distinct index)"
            )
        device = self.scorer.device
        roles = batch.roles.to(device)
        onehot = role_onehot(roles, self.scorer.model.dtype)
        real = roles != int(Role.PAD)
        self._state = _BatchState(
            onehot=onehot, weights=source_weights(onehot), real=real, lengths=real.sum(dim=1).tolist()
        )
        try:
            if self._bridge is None:
                with torch.inference_mode():
                    scores = self.scorer.forward(batch).float().cpu()
            else:
                scores, tl_cache = transformer_lens_run(
                    self.scorer, batch, self._bridge, names_filter=lambda n: n.endswith(".attn.hook_pattern")
                )
                for layer in self.hooked_layers:  # the same hook functions, fed TransformerLens' patterns
                    name = pattern_name(layer)
                    if name in tl_cache:
                        for fn in self.context.hooks[name]:
                            fn(tl_cache[name], name)
            missing = [la for la in self.hooked_layers if la not in self._state.fired]
            if missing:
                raise BadInput(
                    f"layer {missing[0]} of model {self.scorer.name!r} returned no attention pattern (its "
                    "attention runs a fused kernel outside transformers' attention interface); patterns and "
                    "flows cannot be captured from this model"
                )
            for name, value in self._state.out.items():
                self._rows.setdefault(name, []).append(value)
        finally:
            st, self._state = self._state, None
        self._index.extend(batch.index)
        self._seen.update(batch.index)
        roles_cpu = batch.roles.cpu()
        self._roles.extend(roles_cpu[i, :n].clone() for i, n in enumerate(st.lengths))
        return scores

    def score(self, pairs: Sequence[Pair], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Score ``pairs`` (same values as ``scorer.score``) while capturing; cache rows follow ``pairs``."""

        scores = np.zeros(len(pairs), dtype=np.float32)
        base = max(self._seen) + 1 if self._seen else 0
        bar = progress_bar(total=len(pairs), disable=not progress, desc="probing", unit="pair")
        for batch in self.scorer.batches(pairs, batch_size):
            rows = list(batch.index)
            batch.index = [base + i for i in rows]
            scores[rows] = self.forward(batch).numpy()
            bar.update(len(batch))
        bar.close()
        return scores

    @property
    def cache(self) -> ProbeCache:
        """Everything captured so far, rows sorted by pair index."""
        order = np.argsort(np.asarray(self._index, dtype=np.int64), kind="stable")
        out = ProbeCache(
            index=[self._index[i] for i in order],
            roles=[self._roles[i] for i in order],
            heads=self.heads,
            layers=self.layers,
        )
        for name, chunks in self._rows.items():
            if chunks and isinstance(chunks[0], list):
                flat = [t for chunk in chunks for t in chunk]
                out[name] = [flat[i] for i in order]
            else:
                out[name] = torch.cat(chunks, dim=0)[torch.as_tensor(order, dtype=torch.long)]
        return out


def _rollout_step(pattern: torch.Tensor, real: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """One Abnar & Zuidema rollout step: ``R_l = norm(0.5 * mean_h A_l + 0.5 * I) @ R_{l-1}`` on real
    tokens."""
    realf = real.to(pattern.dtype)
    a = pattern.mean(dim=1)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).unsqueeze(0)
    a_hat = (0.5 * a + 0.5 * eye) * realf.unsqueeze(1) * realf.unsqueeze(2)
    a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)
    if prev is None:
        return a_hat
    return torch.matmul(a_hat, prev)


@contextlib.contextmanager
def capture(
    scorer: CrossEncoder,
    what: Sequence[str] = ("flows",),
    *,
    layers: str | Iterable[int] | None = None,
    heads: str | Iterable[int] | None = None,
    backend: str = "hf",
) -> Iterator[Capture]:
    """Install capture hooks on ``scorer`` for the span of the block; see the module docstring."""
    what = (what,) if isinstance(what, str) else tuple(what)
    cap = Capture(scorer, CaptureSpec(what, layers, heads, backend))
    scope = attention_context(scorer.model, cap.context) if backend == "hf" else contextlib.nullcontext()
    with scope:
        cap._active = True
        try:
            yield cap
        finally:
            cap._active = False


def run_with_cache(
    scorer: CrossEncoder,
    pairs: Sequence[Pair],
    what: Sequence[str] = ("pattern",),
    *,
    layers: str | Iterable[int] | None = None,
    heads: str | Iterable[int] | None = None,
    batch_size: int = 32,
    backend: str = "hf",
) -> tuple[np.ndarray, ProbeCache]:
    """Scores and the cache for ``pairs`` in one call (TransformerLens' ``run_with_cache``)."""
    with capture(scorer, what, layers=layers, heads=heads, backend=backend) as cap:
        scores = cap.score(pairs, batch_size=batch_size)
    return scores, cap.cache


# ------------------------------------------------------- TransformerLens bridge
def transformer_lens_bridge(scorer: CrossEncoder):
    """A TransformerLens ``TransformerBridge`` over a copy of ``scorer``'s BERT encoder.

    transformer-lens 4.x has no ``HookedEncoder`` (removed in 4.0) and its BERT adapter requires a
    masked-LM head (``cls.predictions``), which a sequence-classification model lacks. The encoder is
    therefore copied into a ``BertForMaskedLM`` twin (its unused MLM head randomly initialised); the
    classification head is applied by :func:`transformer_lens_run` to the bridge's ``pooler.hook_out``.
    The scorer's own model is not modified.
    """
    model = scorer.model
    if scorer.signature:
        raise BadInput(
            f"the TransformerLens backend runs the plain encoder, but {scorer.name!r} computes its own "
            f"forward ({scorer.signature.split(':')[0]} model); use the hf backend"
        )
    if getattr(model.config, "model_type", None) != "bert" or not hasattr(model, "bert"):
        raise BadInput(
            f"the TransformerLens path supports BERT models only; {scorer.name!r} is "
            f"{getattr(model.config, 'model_type', type(model).__name__)!r} (use capture())"
        )
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    cfg = copy.deepcopy(model.config)
    cfg.architectures = ["BertForMaskedLM"]
    twin = BertForMaskedLM(cfg)
    twin.bert = copy.deepcopy(model.bert)
    twin.eval()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return TransformerBridge.boot_transformers(
            scorer.name, hf_model=twin, tokenizer=scorer.tokenizer, device=str(scorer.device)
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def transformer_lens_run(
    scorer: CrossEncoder, batch: PairBatch, bridge=None, names_filter=None
) -> tuple[torch.Tensor, dict]:
    """Scores and TransformerLens' activation cache for one batch, via :func:`transformer_lens_bridge`.

    ``names_filter`` (TransformerLens' own argument) limits what is cached; ``pooler.hook_out`` is always
    kept since the score is computed from it.
    """
    bridge = bridge or transformer_lens_bridge(scorer)
    inputs = batch.to(scorer.device).model_inputs()
    keep = None if names_filter is None else (lambda name: name == "pooler.hook_out" or names_filter(name))
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(inputs.pop("input_ids"), names_filter=keep, **inputs)
        pooled = cache["pooler.hook_out"]
        scores = scorer.logits_to_scores(scorer.model.classifier(pooled))
    return scores.float().cpu(), cache


__all__ = [
    "BACKENDS",
    "HOOK_CLS_ROLLOUT",
    "HOOK_ROLE_FLOW",
    "WHAT",
    "Capture",
    "CaptureSpec",
    "ProbeCache",
    "capture",
    "flow_name",
    "pattern_name",
    "rollout_name",
    "run_with_cache",
    "transformer_lens_bridge",
    "transformer_lens_run",
]
