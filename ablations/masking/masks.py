"""Mask specifications as data, and their compilation into per-layer attention biases.

A :class:`MaskSpec` is a plain, JSON-serialisable list of :class:`Rule` s: *remove this interaction in
these layers (and heads)*. It does not depend on a model: ``layers="all"`` or ``"0-6"`` are resolved
against a model only when the spec is compiled (:func:`compile_mask`).

Compilation gives a small boolean table ``allowed[layer, head|1, source role, target role]`` over the
six token roles (:mod:`probe.roles`). Only per batch is it expanded to tokens: the table is indexed with
``roles[:, :, None]`` (attending token) and ``roles[:, None, :]`` (attended token) into a
``(batch, heads|1, q, k)`` additive bias (0 keeps, -inf removes), once per *distinct* layer table, and
handed to :func:`probe.attention.attention_context`. Two guarantees:

- padding is never touched (the model's own padding mask removes padded keys);
- a token whose every key would be removed keeps attention to itself (the diagonal), so no attention row
  is empty and no NaN can appear.

Layer and head ranges are 0-based and inclusive: ``0-6``, ``0-2,5``, ``all`` (parsed by :mod:`probe.ranges`;
import the range functions from there). A layer range whose end runs past the last layer is clamped with a
one-line notice (``layers 0-6 → 0-5: the model has 6 layers``); a range that starts past it is an error.
Head indices must exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ablations.masking.interactions import check_interaction, parse_interaction, preset_rules, valid_names
from probe.errors import BadInput
from probe.ranges import format_ranges, parse_ranges, resolve_ranges
from probe.roles import N_ROLES, ROLE_NAMES, Role

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------------------------- spec
@dataclass
class Rule:
    """Remove ``interaction`` (a name or a preset, see :mod:`ablations.masking.interactions`) in ``layers``
    and ``heads`` (range strings, ``"all"`` by default)."""

    interaction: str
    layers: str = "all"
    heads: str = "all"

    def __post_init__(self):
        self.interaction = str(self.interaction).strip()
        self.layers = str(self.layers).strip()
        self.heads = str(self.heads).strip()
        check_interaction(self.interaction)
        parse_ranges(self.layers, "layers")
        parse_ranges(self.heads, "heads")

    @property
    def label(self) -> str:
        out = self.interaction
        if self.layers.lower() != "all":
            out += f"[{self.layers}]"
        if self.heads.lower() != "all":
            out += f"{{h{self.heads}}}"
        return out


@dataclass
class MaskSpec:
    """Which interactions are removed in which layers (and heads). JSON round-trips exactly."""

    rules: list[Rule] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    #: ``(num_layers, num_heads)`` of the model the spec was made on (a search result, a MICE
    #: configuration), or ``None`` (written by hand: layer ranges are clamped to any model). A spec made
    #: for another shape is refused by :func:`compile_mask`.
    made_for: tuple[int, int] | None = None

    def __post_init__(self):
        if self.schema_version != SCHEMA_VERSION:
            raise BadInput(
                f"mask spec schema_version {self.schema_version!r}; this toolkit reads {SCHEMA_VERSION}"
            )
        self.rules = [r if isinstance(r, Rule) else Rule(**_rule_fields(r)) for r in self.rules]
        if self.made_for is not None:
            self.made_for = _made_for(self.made_for)

    # --- serialisation
    def to_dict(self) -> dict:
        out = {
            "schema_version": self.schema_version,
            "rules": [
                {"interaction": r.interaction, "layers": r.layers, "heads": r.heads} for r in self.rules
            ],
        }
        if self.made_for is not None:
            out["made_for"] = {"num_layers": self.made_for[0], "num_heads": self.made_for[1]}
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> MaskSpec:
        if not isinstance(data, dict) or "rules" not in data:
            raise BadInput(
                f"a mask spec is a JSON object with 'rules' and 'schema_version', got {str(data)[:80]!r}"
            )
        unknown = set(data) - {"rules", "schema_version", "made_for"}
        if unknown:
            raise BadInput(
                f"mask spec: unknown field {sorted(unknown)[0]!r}; expected rules, schema_version, made_for"
            )
        made_for = data.get("made_for")
        if isinstance(made_for, dict):
            made_for = (made_for.get("num_layers"), made_for.get("num_heads"))
        return cls(
            rules=list(data["rules"]),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
            made_for=made_for,
        )

    @classmethod
    def from_json(cls, text: str) -> MaskSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"mask spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    # --- convenience
    @classmethod
    def remove(cls, *interactions: str, layers: str = "all", heads: str = "all") -> MaskSpec:
        return cls([Rule(i, layers, heads) for i in interactions])

    def __add__(self, other: MaskSpec) -> MaskSpec:
        shapes = {m for m in (self.made_for, other.made_for) if m is not None}
        if len(shapes) > 1:
            raise BadInput(f"cannot combine mask specs made for {' and '.join(map(_shape, sorted(shapes)))}")
        return MaskSpec([*self.rules, *other.rules], made_for=next(iter(shapes), None))

    def for_model(self, num_layers: int, num_heads: int) -> MaskSpec:
        """The same rules, marked as made on a model of that shape (what search results record)."""
        return MaskSpec(list(self.rules), self.schema_version, (num_layers, num_heads))

    @property
    def label(self) -> str:
        return " + ".join(r.label for r in self.rules) or "none"

    def require_rules(self) -> MaskSpec:
        if not self.rules:
            raise BadInput(
                "empty mask: nothing to remove; give at least one --remove INTERACTION "
                "(e.g. --remove doc2query)"
            )
        return self


def parse_rules(
    items: Sequence[str], layers: str = "all", heads: str = "all", *, what: str = "--remove"
) -> list[Rule]:
    """Rules from ``INTERACTION[:LAYERS[:HEADS]]`` items (the CLIs' ``--remove``, the explorer's toggles);
    an item without its own layers / heads takes ``layers`` / ``heads``. Only the syntax is checked."""
    rules = []
    for item in items:
        parts = item.split(":")
        if len(parts) > 3 or not parts[0].strip():
            raise BadInput(
                f"{what} {item!r}: expected INTERACTION[:LAYERS[:HEADS]]; interactions: {valid_names()}"
            )
        own_layers = parts[1] if len(parts) > 1 and parts[1].strip() else layers
        own_heads = parts[2] if len(parts) > 2 and parts[2].strip() else heads
        rules.append(Rule(parts[0], own_layers, own_heads))
    return rules


def read_spec(path, *, what: str = "--spec") -> MaskSpec:
    """The mask spec a JSON file holds (a spec, a search result, a MICE configuration: see
    :func:`spec_from_document`); an unreadable one is refused in one line naming ``what``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return spec_from_document(data, f"{what} {str(path)!r}")


def spec_from_document(data: dict, source: str = "the file") -> MaskSpec:
    """A mask spec from a JSON document: a MaskSpec (``rules``), a search result (``removed``), or a
    document wrapping one under ``mask`` / ``spec`` / ``mask_spec``."""
    if "rules" in data:
        return MaskSpec.from_dict(data)
    for key in ("mask", "mask_spec", "spec", "removed"):
        inner = data.get(key)
        if isinstance(inner, str):
            try:
                inner = json.loads(inner)
            except ValueError:
                continue
        if isinstance(inner, dict) and "rules" in inner:
            spec = MaskSpec.from_dict(inner)
            if spec.made_for is None and {"num_layers", "num_heads"} <= set(data):  # a MICE configuration
                spec = spec.for_model(data["num_layers"], data["num_heads"])
            return spec
    raise BadInput(
        f"{source} holds no mask spec: expected a MICE configuration (ablations.mice.config), an "
        "object with 'rules' (a MaskSpec), or one under 'mask', 'mask_spec', 'spec' or 'removed' "
        "(search.json)"
    )


def _made_for(value) -> tuple[int, int]:
    try:
        layers, heads = value
    except (TypeError, ValueError):
        layers = heads = None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (layers, heads)):
        raise BadInput(
            f"mask spec made_for {value!r}: expected {{'num_layers': L, 'num_heads': H}} with L, H >= 1"
        )
    return (layers, heads)


def _shape(made_for: tuple[int, int]) -> str:
    return f"{made_for[0]} layers × {made_for[1]} heads"


def _rule_fields(r) -> dict:
    if isinstance(r, dict):
        unknown = set(r) - {"interaction", "layers", "heads"}
        if unknown or "interaction" not in r:
            raise BadInput(f"mask spec rule {r!r}: expected keys interaction, layers, heads")
        return r
    if isinstance(r, (list, tuple)) and 1 <= len(r) <= 3:
        return dict(zip(("interaction", "layers", "heads"), r))
    raise BadInput(f"mask spec rule {r!r}: expected an object with interaction, layers, heads")


# ----------------------------------------------------------------------------------------- compiled
@dataclass
class CompiledMask:
    """A spec resolved against a model: ``allowed[layer, head|1, source role, target role]`` (bool).

    ``groups[layer]`` is the index of the layer's distinct table in ``tables`` or -1 when nothing is
    removed in that layer; identical layers share one table and one bias per batch.
    """

    spec: MaskSpec
    allowed: torch.Tensor
    notices: list[str]
    num_layers: int
    num_heads: int
    groups: list[int] = field(default_factory=list)
    tables: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self):
        keys: dict[bytes, int] = {}
        self.groups, self.tables = [], []
        for layer in range(self.num_layers):
            tab = self.allowed[layer]
            if bool(tab.all()):
                self.groups.append(-1)
                continue
            key = tab.numpy().tobytes()
            if key not in keys:
                keys[key] = len(self.tables)
                self.tables.append(tab.contiguous())
            self.groups.append(keys[key])

    # --- description
    def key(self) -> str:
        """A hash of the compiled table (expanded over heads): equal for masks that remove the same
        attention, whatever their spelling (``doc2query`` and ``doc2query[0-99]`` clamped, all heads named
        or ``all``)."""
        table = self.allowed.expand(-1, self.num_heads, -1, -1).contiguous()
        return hashlib.sha1(table.numpy().tobytes() + str(tuple(table.shape)).encode()).hexdigest()

    @property
    def masked_layers(self) -> tuple[int, ...]:
        return tuple(i for i, g in enumerate(self.groups) if g >= 0)

    @property
    def first_layer(self) -> int | None:
        """First layer with a removal (``None`` if nothing is removed): earlier layers equal the full
        model's."""
        layers = self.masked_layers
        return layers[0] if layers else None

    @property
    def is_empty(self) -> bool:
        return not self.masked_layers

    @property
    def per_head(self) -> bool:
        return self.allowed.shape[1] > 1

    def masked_heads(self) -> tuple[int, ...]:
        if not self.per_head:
            return tuple(range(self.num_heads)) if not self.is_empty else ()
        removed = ~self.allowed.reshape(self.num_layers, self.allowed.shape[1], -1).all(-1)
        return tuple(int(h) for h in removed.any(0).nonzero().flatten())

    def affected_sources(self, layer: int) -> set[int]:
        """Roles (codes) whose tokens lose at least one key in ``layer`` (in any head)."""
        return {int(r) for r in (~self.allowed[layer]).any(-1).any(0).nonzero().flatten()}

    def removed_pairs(self, layer: int) -> list[tuple[str, str]]:
        """``[(source, target), ...]`` removed in ``layer`` (in any head)."""
        gone = ~self.allowed[layer].all(0)
        return [(ROLE_NAMES[s], ROLE_NAMES[t]) for s, t in gone.nonzero().tolist()]

    def describe(self) -> str:
        if self.is_empty:
            return "nothing removed"
        heads = "" if not self.per_head else f", heads {format_ranges(self.masked_heads())}"
        return f"{self.spec.label} → layers {format_ranges(self.masked_layers)}{heads}"

    # --- expansion to tokens
    def bias_fn(
        self, roles: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> Callable[[int], torch.Tensor | None]:
        """``layer -> additive bias (batch, heads|1, q, k) | None`` for one batch of token ``roles``.

        Each distinct layer table is expanded once per batch, on first use.
        """
        cache: dict[int, torch.Tensor] = {}
        code: list[torch.Tensor] = []  # the (b, q, k) role-pair code, shared by the batch's tables

        def bias(layer: int) -> torch.Tensor | None:
            g = self.groups[layer] if layer is not None and 0 <= layer < len(self.groups) else -1
            if g < 0:
                return None
            if g not in cache:
                if not code:
                    code.append(role_pair_code(roles))
                cache[g] = expand_table(self.tables[g], roles, dtype, code=code[0])
            return cache[g]

        return bias


def role_pair_code(roles: torch.Tensor) -> torch.Tensor:
    """``code[b, i, j] = roles[b, i] * 6 + roles[b, j]``: the (attending, attended) role pair of every
    entry."""
    return roles[:, :, None] * N_ROLES + roles[:, None, :]


def expand_table(
    table: torch.Tensor,
    roles: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    code: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gather a ``(heads|1, 6, 6)`` allowed-table into an additive ``(batch, heads|1, q, k)`` bias.

    Rows whose every real key is removed get their diagonal back (self-attention fallback).
    """
    table = table.to(roles.device).clone()
    table[:, int(Role.PAD), :] = True  # padding is the model's business, never the mask's
    table[:, :, int(Role.PAD)] = True
    h = table.shape[0]
    code = role_pair_code(roles) if code is None else code  # (b, q, k)
    allowed = table.reshape(h, -1)[:, code].transpose(0, 1)  # (b, h, q, k)
    # Which source roles of each row would see no real key: the table against the roles present.
    real = torch.zeros(roles.shape[0], N_ROLES, dtype=torch.bool, device=roles.device)
    real.scatter_(1, roles, True)
    real[:, int(Role.PAD)] = False
    empty_role = ~(table[None] & real[:, None, None, :]).any(-1)  # (b, h, 6)
    empty_role[:, :, int(Role.PAD)] = False
    if bool(empty_role.any()):
        idx = roles[:, None, :].expand(-1, h, -1)
        empty_tok = torch.gather(empty_role, 2, idx)  # (b, h, q)
        eye = torch.eye(roles.shape[1], dtype=torch.bool, device=roles.device)
        allowed = allowed | (empty_tok[..., None] & eye)
    return torch.zeros(allowed.shape, dtype=dtype, device=roles.device).masked_fill_(~allowed, float("-inf"))


def compile_mask(spec: MaskSpec, num_layers: int, num_heads: int) -> CompiledMask:
    """Resolve ``spec`` against a model with ``num_layers`` layers and ``num_heads`` heads; a spec made on a
    model of another shape (``spec.made_for``) is refused."""
    if spec.made_for is not None and spec.made_for != (num_layers, num_heads):
        raise BadInput(
            f"mask spec made for {_shape(spec.made_for)} does not fit this model "
            f"({_shape((num_layers, num_heads))}); make it on this model (ablations.search, "
            "ablations.export) or drop its 'made_for' to clamp its layer ranges"
        )
    per_head = any(r.heads.lower() != "all" for r in spec.rules)
    allowed = torch.ones(num_layers, num_heads if per_head else 1, N_ROLES, N_ROLES, dtype=torch.bool)
    notices: list[str] = []
    for rule, layers in zip(*_resolved(spec, num_layers, notices)):
        heads = resolve_ranges(rule.heads, num_heads, "heads", clamp=False)[0] if per_head else (0,)
        pairs = parse_interaction(rule.interaction).pairs
        for layer in layers:
            for head in heads:
                for s, t in pairs:
                    allowed[layer, head, s, t] = False
    return CompiledMask(spec, allowed, list(dict.fromkeys(notices)), num_layers, num_heads)


def compile_for(model, spec: MaskSpec) -> CompiledMask:
    """Compile ``spec`` for a model's number of layers and heads (anything with ``num_layers`` and
    ``num_heads``: a cross-encoder, a MICE model's view); the one way the tools compile a spec."""
    return compile_mask(spec, model.num_layers, model.num_heads)


def _resolved(spec: MaskSpec, num_layers: int, notices: list[str]):
    """Plain rules with their resolved layer indices; presets intersected with the rule's own layers."""
    rules, layer_sets = [], []
    for rule in spec.rules:
        own, notice = resolve_ranges(rule.layers, num_layers, "layers")
        if notice:
            notices.append(notice)
        sub = preset_rules(rule.interaction, num_layers)
        if sub is None:
            rules.append(rule)
            layer_sets.append(own)
            continue
        for p in sub:
            inner, notice = resolve_ranges(p.layers, num_layers, "layers")
            if notice:
                notices.append(f"{rule.interaction}: {notice}")
            rules.append(Rule(p.interaction, p.layers, rule.heads))
            layer_sets.append(tuple(i for i in inner if i in set(own)))
    return rules, layer_sets
