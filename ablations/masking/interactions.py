"""The interaction vocabulary: which token role may attend to which, named ``<source>2<target>``.

An *interaction* is a set of ``(source role, target role)`` pairs. The **source is the attending token**
(the query row of the attention matrix); the **target is the attended token** (the key/value column).
Removing ``doc2query`` therefore masks the key side: document tokens can no longer read query tokens,
while query tokens may still read document tokens (that is ``query2doc``).

Grammar (parsed once into a value by :func:`parse_interaction`)::

    interaction := term ("+" term)*
    term        := role "2" role | preset
    role        := cls | query | sep1 | doc | sep2 | sep | *
    preset      := mice-step0 | mice-step1 | mice-step2 | mice-step3[@K | -lK]

``sep`` means both separators (``sep1`` after the query, ``sep2`` after the document) and ``*`` any real
token (cls, query, sep1, doc, sep2). Padding is never part of an interaction: the model's own padding
mask handles it. Examples: ``doc2query``, ``query2doc+doc2query``, ``*2sep``, ``sep2*``, ``*2cls``.

Presets reproduce the cumulative masking steps of the MICE paper (arXiv 2602.16299, "X ↛ Y" = X may
not attend to Y); each step contains the previous ones:

- ``mice-step0`` — attention sinks removed: no token but CLS attends to CLS; documents ↛ SEP1;
  query ↛ SEP2; SEP1 and SEP2 attend to nothing else (only to themselves);
- ``mice-step1`` — + CLS ↛ document and SEP2 (CLS reads the query side only);
- ``mice-step2`` — + document ↛ query in all layers (document states become query-independent);
- ``mice-step3@K`` — + query ↛ document in layers 0…K-1 (query–document interaction starts at layer K).
  ``mice-step3`` alone scales with depth: ``K = num_layers // 3`` (:func:`default_mice_k`), the paper's
  ``K = 4`` on 12-layer MiniLM and ``K = 2`` on a 6-layer model. ``mice-step3-l4`` = ``mice-step3@4``.

A preset is a list of ``(interaction, layers)`` rules; see :func:`preset_rules`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from probe.errors import BadInput
from probe.roles import ROLE_NAMES, TOKEN_ROLES, Role

#: Role names usable in interactions and the role codes they stand for.
ROLE_ALIASES: dict[str, tuple[int, ...]] = {
    "cls": (int(Role.CLS),),
    "query": (int(Role.QUERY),),
    "sep1": (int(Role.SEP1),),
    "doc": (int(Role.DOC),),
    "sep2": (int(Role.SEP2),),
    "sep": (int(Role.SEP1), int(Role.SEP2)),
    "*": tuple(int(r) for r in TOKEN_ROLES),
}
#: The named interactions the issue asks for (all are instances of the grammar above).
NAMED = (
    "query2doc",
    "doc2query",
    "query2query",
    "doc2doc",
    "cls2query",
    "cls2doc",
    "query2cls",
    "doc2cls",
    "*2sep",
    "sep2*",
    "*2cls",
    "cls2*",
)
#: ``mice-step3``'s query-document interaction start when the layer count is unknown (6 layers).
DEFAULT_MICE_K = 2


def default_mice_k(num_layers: int | None) -> int:
    """Where query-document interaction starts in ``mice-step3`` (and the MICE-ℓK+3 architecture) for a
    model of ``num_layers``: a third of the depth (12 → 4, the paper's MICE-ℓ4+3; 6 → 2), at least 1."""
    if num_layers is None:
        return DEFAULT_MICE_K
    return max(1, int(num_layers) // 3)


def default_final_preset(num_layers: int) -> str:
    """The MICE paper's final architecture scaled to ``num_layers``: ``mice-lK+3`` with K from
    :func:`default_mice_k` (12 layers → ``mice-l4+3``, 6 → ``mice-l2+3``); fewer interaction layers
    when the model is too shallow for three."""
    k = default_mice_k(num_layers)
    return f"mice-l{k}+{max(1, min(3, num_layers - k))}"


#: The mask presets (the MICE paper's steps); training presets are
#: ``ablations.training.train.TRAINING_PRESETS``.
MASK_PRESETS = ("mice-step0", "mice-step1", "mice-step2", "mice-step3")

_ROLE = r"(sep1|sep2|sep|cls|query|doc|\*)"
_TERM = re.compile(rf"{_ROLE}2{_ROLE}")
_PRESET = re.compile(r"mice-step([0-3])(?:(?:@|-l)(\d+))?")

Pair = tuple[int, int]


def valid_names() -> str:
    """One line listing what an interaction may be (used in error messages and --help)."""
    return (
        f"{', '.join(NAMED)}, any <source>2<target> with roles {', '.join(ROLE_ALIASES)} "
        f"(source = the attending token), terms joined with '+', or a preset "
        f"{', '.join(MASK_PRESETS[:-1])}, mice-step3[@K]"
    )


@dataclass(frozen=True)
class PresetRule:
    """One rule of a preset: ``interaction`` removed in ``layers`` (a layer-range string)."""

    interaction: str
    layers: str = "all"


def _step0() -> list[PresetRule]:
    return [
        PresetRule("query2cls+sep12cls+doc2cls+sep22cls"),  # nobody but CLS reads CLS
        PresetRule("doc2sep1"),  # documents do not use SEP1 as a sink
        PresetRule("query2sep2"),  # the query does not use SEP2 as a sink
        PresetRule("sep12cls+sep12query+sep12doc+sep12sep2"),  # SEP1 reads only itself
        PresetRule("sep22cls+sep22query+sep22sep1+sep22doc"),  # SEP2 reads only itself
    ]


def preset_rules(name: str, num_layers: int | None = None) -> list[PresetRule] | None:
    """Rules of a preset (``None`` if ``name`` is not a preset). ``mice-step3@K`` needs ``K >= 0``;
    ``mice-step3`` takes ``K`` from ``num_layers`` (:func:`default_mice_k`)."""
    m = _PRESET.fullmatch(name.strip().lower())
    if not m:
        return None
    step = int(m.group(1))
    if m.group(2) is not None and step != 3:
        raise BadInput(f"preset {name!r}: only mice-step3 takes a layer K (mice-step3@K)")
    rules = _step0()
    if step >= 1:
        rules.append(PresetRule("cls2doc+cls2sep2"))
    if step >= 2:
        rules.append(PresetRule("doc2query"))
    if step >= 3:
        k = default_mice_k(num_layers) if m.group(2) is None else int(m.group(2))
        if k > 0:
            rules.append(PresetRule("query2doc", f"0-{k - 1}"))
    return rules


def is_preset(name: str) -> bool:
    return _PRESET.fullmatch(name.strip().lower()) is not None


@dataclass(frozen=True)
class Interaction:
    """A parsed interaction: its canonical name and the (source role, target role) pairs it removes."""

    name: str
    pairs: frozenset[Pair]

    def describe(self) -> str:
        return ", ".join(f"{ROLE_NAMES[s]}→{ROLE_NAMES[t]}" for s, t in sorted(self.pairs))


def parse_interaction(name: str) -> Interaction:
    """Parse a '+'-joined list of ``<source>2<target>`` terms (not presets: see :func:`preset_rules`)."""
    if not isinstance(name, str) or not name.strip():
        raise BadInput(f"empty interaction name {name!r}; valid: {valid_names()}")
    pairs: set[Pair] = set()
    terms = [t.strip().lower() for t in name.split("+")]
    for term in terms:
        if is_preset(term):
            raise BadInput(
                f"preset {term!r} cannot be combined with '+' in {name!r}; give it as its own rule"
            )
        m = _TERM.fullmatch(term)
        if not m:
            raise BadInput(f"unknown interaction {term!r}; valid: {valid_names()}")
        for s in ROLE_ALIASES[m.group(1)]:
            for t in ROLE_ALIASES[m.group(2)]:
                pairs.add((s, t))
    return Interaction("+".join(terms), frozenset(pairs))


def check_interaction(name: str) -> None:
    """Raise :class:`BadInput` unless ``name`` is an interaction or a preset."""
    if preset_rules(name) is None:
        parse_interaction(name)


#: What ``ablations.sweep`` sweeps by default, its modes, and ``ablations.search``'s strategies (here, with
#: the vocabulary, so the command lines build their parsers without importing torch).
SWEEP_INTERACTIONS = ("query2doc", "doc2query", "cls2query", "cls2doc")
SWEEP_MODES = ("single", "from", "upto")
SEARCH_STRATEGIES = ("ordered", "best")
