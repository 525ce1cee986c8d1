"""What a probe run depends on, importable without torch: :class:`ProbeConfig` (``python -m probe.run``'s
flags, one field each) and the choices its flags offer. ``probe.run`` parses and checks its arguments with
this module alone, so a typo is answered before seconds of model-library imports."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BadInput
from .ranges import parse_ranges

#: Embedding layers Integrated Gradients can attribute to (``probe.attributions``).
IG_LAYERS = ("embeddings", "word_embeddings")
#: How attention is captured (``probe.capture``).
BACKENDS = ("hf", "transformer_lens")
#: Max tokens per pair when the model folder does not say (``probe.model``).
DEFAULT_MAX_LENGTH = 256


@dataclass
class ProbeConfig:
    """Everything one probe run depends on (recorded in every manifest as ``settings``)."""

    model: str | None = None
    collection: str = "dl19"
    queries: int = 20
    depth: int = 10
    layers: str = "all"
    heads: str = "all"
    backend: str = "hf"
    rollout: bool = True
    flow_pairs: int = 3
    attributions: bool = True
    attribution_pairs: int = 10
    ig_steps: int = 32
    ig_layer: str = "embeddings"
    batch_size: int = 16
    max_length: int | None = None  # None: the model folder's own (sentence_bert_config), else 256
    max_query_length: int | None = None  # None: half of max_length
    seed: int = 0
    out: str = "results/probe"
    progress: bool = True

    def validate(self) -> None:
        """Every check that needs no model: counts, choices and the syntax of the layer / head ranges."""
        for name in ("queries", "depth", "batch_size", "ig_steps"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        for name in ("flow_pairs", "attribution_pairs"):
            if getattr(self, name) < 0:
                raise BadInput(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 0")
        if self.ig_layer not in IG_LAYERS:
            raise BadInput(f"--ig-layer {self.ig_layer!r} is unknown; expected one of {', '.join(IG_LAYERS)}")
        if self.backend not in BACKENDS:
            raise BadInput(f"--backend {self.backend!r} is unknown; expected one of {', '.join(BACKENDS)}")
        parse_ranges(self.layers, "layers")
        parse_ranges(self.heads, "heads")
